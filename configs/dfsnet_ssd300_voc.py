# Differentiable FSNet SSD300 (the later FSNet paper's DFSNet; design of this
# project, docs/dfsnet.md): FSNet-1 SSD300 whose filters learn their location
# in the summary. Every FSConv mixes its block at its grid location and at the
# locations one summary element away along each axis (dfs_radius=1: 7
# candidates for a 3x3 layer) with learned softmax weights; DFSSearchHook
# anneals the softmax temperature from 1 to 0.1 over the first half of the
# schedule, then discretizes every layer to its most likely location, and the
# second half trains the plain FS model. Each filter's grid location starts
# with logit 2 (dfs_prior; the others 0): a uniform start moved most filters
# on gradient noise and lost most of the mAP at demo scale (docs/dfsnet.md).
# A checkpoint after the search holds an int8 table of the locations (counted
# in the parameters), no logits; tools/test.py, quantize and bake take it
# with this config (or the FSNet-1 one).
_base_ = './fsnet_ssd300_voc.py'

fs_conv = dict(type='FSConv', preset='fsnet1', dfs_radius=1, dfs_prior=2.0)
model = dict(
    backbone=dict(conv_cfg=fs_conv),
    neck=dict(conv_cfg=fs_conv),
    bbox_head=dict(pred_conv_cfg=fs_conv))
custom_hooks = [
    dict(type='NumClassCheckHook'),
    dict(type='FiniteLossHook'),
    dict(type='DFSSearchHook', search_iters=0.5, temperature=(1.0, 0.1)),
]
# The location logits: 10x the learning rate (a choice, not tuned: they must
# move within half a schedule) and no weight decay (it would pull every
# filter back towards a uniform mix).
optim_wrapper = dict(paramwise_cfg=dict(
    custom_keys={'dfs_logits': dict(lr_mult=10.0, decay_mult=0.0)}))
# Discretization removes the logits from the model: distributed training must
# not wait for their gradients.
model_wrapper_cfg = dict(type='MMDistributedDataParallel',
                         find_unused_parameters=True)
