# Compress a trained dense detector into FS, step 2 of 2 (README "Compress a
# trained detector"): the FS demo model starts from the structurally
# regularized dense checkpoint of configs/demo/fsreg_ssd300_demo.py (loading a
# dense weight into an FS layer projects it by least squares) and fine-tunes
# as FS.
#
#   python tools/train.py configs/demo/fsnet_ssd300_demo_from_dense.py \
#       --cfg-options load_from=work_dirs/fsreg_ssd300_demo/iter_200.pth
_base_ = './fsnet_ssd300_demo.py'

load_from = 'work_dirs/fsreg_ssd300_demo/iter_200.pth'
max_iters = 50
train_cfg = dict(max_iters=max_iters, val_interval=max_iters + 1)
optim_wrapper = dict(optimizer=dict(lr=1e-3))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=5),
    dict(type='CosineAnnealingLR', by_epoch=False, begin=5, end=max_iters,
         eta_min=1e-5),
]
default_hooks = dict(checkpoint=dict(interval=max_iters))
