# Compress a trained dense detector into FS, step 1 of 2 (README "Compress a
# trained detector"): fine-tune the trained dense model with its detection
# loss while every layer that is FS in the target config is pulled towards
# its FS projection P_FS(W) (FSRegularizationHook): after each optimizer step
# W <- W - rate(t) * (W - P_FS(W)), rate ramped geometrically (the decoupled,
# proximal form of the penalty ||W - P_FS(W)||^2 / ||W||^2; `lam` would add
# the penalty to the loss instead), so that projecting it onto the FS model
# afterwards loses little. Step 2: project it (tools/convert.py) and fine-tune
# it as FS (configs/demo/fsnet_ssd300_demo_from_dense.py). Measured at demo
# scale, output reconstruction of the trained model does better
# (docs/accuracy/from-dense).
#
#   python tools/train.py configs/demo/ssd300_bn_demo.py          # or your model
#   python tools/train.py configs/demo/fsreg_ssd300_demo.py \
#       --cfg-options load_from=work_dirs/ssd300_bn_demo/iter_750.pth
_base_ = './ssd300_bn_demo.py'

# The trained dense model (its config is this file's base); checked strictly.
load_from = 'work_dirs/ssd300_bn_demo/iter_750.pth'
custom_hooks = [
    dict(type='NumClassCheckHook'),
    dict(type='FiniteLossHook'),
    dict(type='FSRegularizationHook',
         target='configs/demo/fsnet_ssd300_demo.py',
         lam=None, shrink=(1e-3, 0.1), ramp_iters=0.6, log_interval=25),
]

# Fine-tuning, not training: a short schedule at a third of the demo's lr.
max_iters = 200
train_cfg = dict(max_iters=max_iters, val_interval=max_iters + 1)
optim_wrapper = dict(optimizer=dict(lr=1e-3))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=10),
    dict(type='CosineAnnealingLR', by_epoch=False, begin=10, end=max_iters,
         eta_min=1e-4),
]
default_hooks = dict(checkpoint=dict(interval=max_iters))
