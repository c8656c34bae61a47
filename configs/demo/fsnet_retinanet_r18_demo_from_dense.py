# FS RetinaNet from a trained dense one, the fine-tuning step (as
# configs/demo/fsnet_ssd300_demo_from_dense.py for SSD300):
#
#   python tools/convert.py configs/demo/fsnet_retinanet_r18_demo.py \
#       work_dirs/retinanet_r18_demo/iter_750.pth work_dirs/fs_init.pth \
#       --reconstruct 4 --recalibrate-bn 25
#   python tools/train.py configs/demo/fsnet_retinanet_r18_demo_from_dense.py
_base_ = './fsnet_retinanet_r18_demo.py'

load_from = 'work_dirs/fs_init.pth'
max_iters = 250
train_cfg = dict(max_iters=max_iters, val_interval=max_iters + 1)
optim_wrapper = dict(optimizer=dict(lr=1e-3))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=5),
    dict(type='CosineAnnealingLR', by_epoch=False, begin=5, end=max_iters,
         eta_min=1e-5),
]
default_hooks = dict(checkpoint=dict(interval=max_iters))
