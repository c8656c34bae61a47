# What `make demo` trains: configs/demo/fsnet_ssd300_demo.py (the accuracy
# benchmark's float32 reference, 750 iterations) with two changes that buy
# accuracy per minute on a CPU:
# - bfloat16 mixed precision (BF16OptimWrapper, fsnet_mmdet/engine/optim.py): the
#   convolutions compute in bfloat16, parameters and optimizer stay float32;
#   a training iteration of this model takes 0.53x the float32 time on the
#   project's 2-core machine (benchmarks/bench_train_settings.py, side by
#   side; docs/performance.md);
# - twice the iterations, 1500, so the demo spends that time learning: the
#   same AdamW recipe, warm-up and cosine decay, stretched.
# Its accuracy against float32 at 1500 iterations (3 seeds each) and the
# demo's wall time: docs/accuracy.md, "Demo".
_base_ = './fsnet_ssd300_demo.py'

max_iters = 1500
train_cfg = dict(max_iters=max_iters, val_interval=max_iters + 1)
optim_wrapper = dict(type='BF16OptimWrapper')
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=30),
    dict(type='CosineAnnealingLR', by_epoch=False, begin=30, end=max_iters,
         eta_min=3e-5),
]
default_hooks = dict(checkpoint=dict(interval=500))
