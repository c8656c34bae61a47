# SSD300 with BatchNorm after every conv, trained from scratch on VOC07+12
# trainval, tested on VOC2007 test (11-point mAP): the paper's baseline
# (FSNet, Sec. 3.2, Table 4: 26.32M parameters, 77.31% mAP).
_base_ = 'mmdet::pascal_voc/ssd300_voc0712.py'
custom_imports = dict(imports=['fsnet_mmdet'], allow_failed_imports=False)

# Dense convs; the FSNet configs change only this (and the head's predictors).
conv_cfg = dict(type='Conv2d')
norm_cfg = dict(type='BN')
model = dict(
    backbone=dict(
        _delete_=True, type='FSSSD300', conv_cfg=conv_cfg, norm_cfg=norm_cfg),
    neck=dict(conv_cfg=conv_cfg, norm_cfg=norm_cfg),
    bbox_head=dict(type='FSSSDHead', pred_conv_cfg=conv_cfg))

# VOC07+12 trainval / VOC07 test as in mmdet's config, read by
# CheckedVOCDataset: malformed annotations stop training, naming the file.
data_root = 'data/VOCdevkit/'
train_dataloader = dict(
    batch_size=16,  # x 8 GPUs = 128 (recipe below)
    num_workers=4,
    dataset=dict(dataset=dict(datasets=[
    dict(
        type='CheckedVOCDataset',
        data_root=data_root,
        ann_file=f'{year}/ImageSets/Main/trainval.txt',
        data_prefix=dict(sub_data_root=f'{year}/'),
        filter_cfg=dict(filter_empty_gt=True, min_size=32),
        pipeline={{_base_.train_pipeline}}) for year in ('VOC2007', 'VOC2012')
    ])))
val_dataloader = dict(dataset=dict(type='CheckedVOCDataset'))
test_dataloader = val_dataloader
# Every iteration: a NaN/inf loss stops training with the likely fix.
custom_hooks = [
    dict(type='NumClassCheckHook'),
    dict(type='FiniteLossHook'),
]

# From-scratch recipe (ScratchDet, DSOD; see docs/method.md "The VOC training recipe"):
# batch 128 = 8 GPUs x 16 with SyncBN across GPUs, SGD lr 0.05 after a linear
# warm-up, about 120k iterations. VOC07+12 trainval has 16,551 images,
# repeated 10x per epoch: 1,293 iterations per epoch at batch 128, so 93
# epochs = 120k iterations; lr / 10 at 80k and 100k (epochs 62 and 77).
# Expected wall time: not measured by us (see docs/method.md "The VOC training recipe").
sync_bn = 'torch'  # BN -> SyncBN when launched on several GPUs
optim_wrapper = dict(
    optimizer=dict(type='SGD', lr=0.05, momentum=0.9, weight_decay=5e-4))
max_epochs = 93
train_cfg = dict(max_epochs=max_epochs)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0,
         end=2000),
    dict(type='MultiStepLR', begin=0, end=max_epochs, by_epoch=True,
         milestones=[62, 77], gamma=0.1),
]
default_hooks = dict(checkpoint=dict(interval=1, max_keep_ckpts=3))
# lr 0.05 is for 128 images per iteration; --auto-scale-lr rescales it.
auto_scale_lr = dict(base_batch_size=128)
