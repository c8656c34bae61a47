# The demo's data for any detector config (configs/demo/*): the generated
# VOC2007-layout scenes of 6 shape classes (tools/demo.py; 400 trainval / 100
# test images), resized to 300 x 300 as in the SSD300 demo
# (configs/demo/fsnet_ssd300_demo.py), flips only. Holds data keys only, so a
# config can list it beside mmdet's `_base_/models/*.py` and demo_schedule.py.
_base_ = 'mmdet::_base_/datasets/voc0712.py'
custom_imports = dict(imports=['fsnet_mmdet'], allow_failed_imports=False)

data_root = 'data/demo/VOCdevkit/'
metainfo = dict(
    classes=('circle', 'square', 'triangle', 'cross', 'ring', 'star'),
    palette=[(220, 20, 60), (0, 128, 255), (0, 200, 0), (255, 160, 0),
             (160, 0, 255), (0, 200, 200)])
image_size = (300, 300)
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='Resize', scale=image_size, keep_ratio=False),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs')
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=image_size, keep_ratio=False),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='PackDetInputs',
         meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape',
                    'scale_factor'))
]
train_dataloader = dict(
    batch_size=8,
    num_workers=1,
    batch_sampler=None,
    dataset=dict(
        _delete_=True,
        type='RepeatDataset',
        times=100,
        dataset=dict(
            type='CheckedVOCDataset',
            data_root=data_root,
            metainfo=metainfo,
            ann_file='VOC2007/ImageSets/Main/trainval.txt',
            data_prefix=dict(sub_data_root='VOC2007/'),
            filter_cfg=dict(filter_empty_gt=True, min_size=8),
            pipeline=train_pipeline)))
val_dataloader = dict(
    batch_size=8,
    num_workers=1,
    dataset=dict(type='CheckedVOCDataset', data_root=data_root,
                 metainfo=metainfo, pipeline=test_pipeline))
test_dataloader = val_dataloader
