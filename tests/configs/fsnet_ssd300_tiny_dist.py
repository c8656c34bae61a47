# The tiny config for 2 CPU processes: gloo, per-process BN, 2 images per
# process per iteration, and every rank saving its final weights.
_base_ = './fsnet_ssd300_tiny.py'
custom_imports = dict(imports=['fsnet_mmdet', 'dist_hooks'],
                      allow_failed_imports=False)
env_cfg = dict(dist_cfg=dict(backend='gloo'))
sync_bn = None
train_dataloader = dict(dataset=dict(times=2))
train_cfg = dict(max_epochs=2, val_interval=10)
custom_hooks = [dict(type='DumpRankWeightsHook')]
