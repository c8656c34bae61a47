# DFSNet SSD300 (configs/dfsnet_ssd300_voc.py's search) on the tiny FSNet-1
# config: 2 iterations, the first searching, then discretized.
_base_ = './fsnet_ssd300_tiny.py'

fs_conv = dict(type='FSConv', preset='fsnet1', dfs_radius=1)
model = dict(
    backbone=dict(conv_cfg=fs_conv),
    neck=dict(conv_cfg=fs_conv),
    bbox_head=dict(pred_conv_cfg=fs_conv))
custom_hooks = [
    dict(type='NumClassCheckHook'),
    dict(type='FiniteLossHook'),
    dict(type='DFSSearchHook', search_iters=1, temperature=(1.0, 0.1)),
]
optim_wrapper = dict(paramwise_cfg=dict(
    custom_keys={'dfs_logits': dict(lr_mult=10.0, decay_mult=0.0)}))
