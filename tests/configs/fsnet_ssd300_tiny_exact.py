# The tiny config made exactly reproducible for the resume test: no random
# augmentation, 4 epochs of one iteration each.
_base_ = './fsnet_ssd300_tiny.py'

train_dataloader = dict(dataset=dict(dataset=dict(datasets=[
    dict(
        type='CheckedVOCDataset',
        data_root={{_base_.data_root}},
        ann_file=f'{year}/ImageSets/Main/trainval.txt',
        data_prefix=dict(sub_data_root=f'{year}/'),
        pipeline={{_base_.test_pipeline}})
    for year in ('VOC2007', 'VOC2012')
])))
train_cfg = dict(max_epochs=4, val_interval=10)
