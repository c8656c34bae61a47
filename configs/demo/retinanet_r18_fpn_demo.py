# RetinaNet on the demo data, trained from scratch on a 2-core CPU: mmdet's
# RetinaNet R-50-FPN (_base_/models/retinanet_r50_fpn.py) with what the
# budget forces changed: a ResNet-18 at a quarter of its width, an FPN of 64
# channels, two-conv head towers, 300 x 300 images, the demo schedule
# (_base_/demo_schedule.py: AdamW, 1500 bfloat16 iterations of 8 images).
# From scratch, so no ImageNet init, BN trained in every stage, and GroupNorm
# in the head towers (He et al., "Rethinking ImageNet Pre-training": every
# layer that trains normalized; docs/detectors.md, "Diagnosis").
# Its FS twin: fsnet_retinanet_r18_fpn_demo.py (fs_convert only).
_base_ = [
    'mmdet::_base_/models/retinanet_r50_fpn.py',
    './_base_/demo_data.py', './_base_/demo_schedule.py'
]

model = dict(
    backbone=dict(
        depth=18, base_channels=16, frozen_stages=-1, norm_eval=False,
        init_cfg=None),
    neck=dict(in_channels=[16, 32, 64, 128], out_channels=64),
    bbox_head=dict(
        num_classes=6, in_channels=64, feat_channels=64, stacked_convs=2,
        norm_cfg=dict(type='GN', num_groups=16, requires_grad=True)))
