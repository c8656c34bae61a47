# Faster R-CNN on the demo data, trained from scratch on a 2-core CPU:
# mmdet's Faster R-CNN R-50-FPN (_base_/models/faster-rcnn_r50_fpn.py) with a
# ResNet-18 at a quarter of its width, an FPN, RPN and RoI extractor of 64
# channels, two shared FC layers of 256, 300 x 300 images and the demo
# schedule (_base_/demo_schedule.py); fewer proposals and RoIs (the demo's
# images hold at most 4 objects; mmdet's 2000 / 512 per image made an
# iteration 2.1 s on 2 cores). From scratch: no ImageNet init, BN trained in
# every stage. Its FS twin: fsnet_faster-rcnn_r18_fpn_demo.py.
_base_ = [
    'mmdet::_base_/models/faster-rcnn_r50_fpn.py',
    './_base_/demo_data.py', './_base_/demo_schedule.py'
]

model = dict(
    backbone=dict(
        depth=18, base_channels=16, frozen_stages=-1, norm_eval=False,
        init_cfg=None),
    neck=dict(in_channels=[16, 32, 64, 128], out_channels=64),
    rpn_head=dict(in_channels=64, feat_channels=64),
    roi_head=dict(
        bbox_roi_extractor=dict(
            out_channels=64,
            roi_layer=dict(type='RoIAlign', output_size=7, sampling_ratio=2)),
        bbox_head=dict(in_channels=64, fc_out_channels=256, num_classes=6)),
    train_cfg=dict(
        rpn_proposal=dict(nms_pre=1000, max_per_img=300),
        rcnn=dict(sampler=dict(num=128))),
    test_cfg=dict(rpn=dict(nms_pre=500, max_per_img=300)))
