# Structural regularization of the tiny dense SSD300-BN towards the tiny
# FSNet-1 (tests/configs/fsnet_ssd300_tiny.py); load_from is set by the test.
_base_ = './ssd300_bn_tiny.py'

custom_hooks = [
    dict(type='FiniteLossHook'),
    dict(type='FSRegularizationHook',
         target='{{ fileDirname }}/fsnet_ssd300_tiny.py',
         lam=(1.0, 10.0), shrink=(0.5, 0.5), ramp_iters=1, log_interval=1),
]
train_cfg = dict(max_epochs=2, val_interval=3)
