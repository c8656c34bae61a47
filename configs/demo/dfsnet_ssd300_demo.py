# DFSNet at demo scale (docs/dfsnet.md): the demo's FSNet SSD300
# (fsnet_ssd300_demo.py, width 0.25, 750 AdamW iterations) with the search of
# configs/dfsnet_ssd300_voc.py: learned filter locations (dfs_radius=1,
# grid prior 2) for the first half of the schedule, then discretized and
# trained as plain FS.
_base_ = './fsnet_ssd300_demo.py'

fs_conv = dict(type='FSConv', preset='paper', dfs_radius=1, dfs_prior=2.0)
model = dict(
    backbone=dict(conv_cfg=fs_conv),
    neck=dict(conv_cfg=fs_conv),
    bbox_head=dict(pred_conv_cfg=fs_conv))
custom_hooks = [
    dict(type='NumClassCheckHook'),
    dict(type='FiniteLossHook'),
    dict(type='DFSSearchHook', search_iters=0.5, temperature=(1.0, 0.1)),
]
optim_wrapper = dict(paramwise_cfg=dict(
    custom_keys={'dfs_logits': dict(lr_mult=10.0, decay_mult=0.0)}))
model_wrapper_cfg = dict(type='MMDistributedDataParallel',
                         find_unused_parameters=True)
