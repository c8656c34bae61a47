# FSNet-1 SSD300 on the two real VOC images under tests/data: the real configs
# with only data paths and the schedule shrunk, for end-to-end tests.
_base_ = '../../configs/fsnet_ssd300_voc.py'

data_root = '{{ fileDirname }}/../data/VOCdevkit/'
train_dataloader = dict(
    batch_size=2,
    num_workers=0,
    persistent_workers=False,
    dataset=dict(
        times=1,
        dataset=dict(datasets=[
            dict(
                type='CheckedVOCDataset',
                data_root=data_root,
                ann_file=f'{year}/ImageSets/Main/trainval.txt',
                data_prefix=dict(sub_data_root=f'{year}/'),
                filter_cfg=dict(filter_empty_gt=True, min_size=32),
                pipeline={{_base_.train_pipeline}})
            for year in ('VOC2007', 'VOC2012')
        ])))
val_dataloader = dict(
    batch_size=1,
    num_workers=0,
    persistent_workers=False,
    dataset=dict(data_root=data_root))
test_dataloader = val_dataloader
train_cfg = dict(max_epochs=2, val_interval=2)
param_scheduler = [dict(type='ConstantLR', factor=1.0, by_epoch=False)]
optim_wrapper = dict(optimizer=dict(lr=1e-3))
default_hooks = dict(logger=dict(interval=1), checkpoint=dict(interval=1))
randomness = dict(seed=0, deterministic=True)
