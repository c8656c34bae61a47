# The demo's schedule for any detector config (configs/demo/*): the SSD300
# demo's (configs/demo/fsnet_ssd300_demo.py): AdamW lr 3e-3, a 30-iteration
# linear warm-up then cosine decay, iterations of 8 images, no validation
# while training (tools/test.py evaluates afterwards), seed 0; bfloat16
# training (BF16OptimWrapper; 0.53x the float32 iteration on 2 CPU cores,
# docs/performance.md) for 1500 iterations, as `make demo` trains. Runtime
# keys from mmdet's default_runtime.py.
_base_ = 'mmdet::_base_/default_runtime.py'

max_iters = 1500
train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters,
                 val_interval=max_iters + 1)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
optim_wrapper = dict(
    type='BF16OptimWrapper',
    optimizer=dict(type='AdamW', lr=3e-3, weight_decay=1e-4))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=30),
    dict(type='CosineAnnealingLR', by_epoch=False, begin=30, end=max_iters,
         eta_min=3e-5),
]
auto_scale_lr = dict(enable=False, base_batch_size=8)
default_hooks = dict(
    logger=dict(interval=25),
    checkpoint=dict(by_epoch=False, interval=500, max_keep_ckpts=1))
log_processor = dict(by_epoch=False)
randomness = dict(seed=0)
