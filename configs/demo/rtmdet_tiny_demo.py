# RTMDet-tiny on the demo data, trained from scratch on a 2-core CPU: mmdet's
# rtmdet_tiny_8xb32-300e_coco.py model (CSPNeXt, CSPNeXtPAFPN, RTMDetSepBNHead;
# written out here: mmdet keeps RTMDet's model and its COCO data in one file)
# at two thirds of tiny's width (widen 0.25 against 0.375), the demo's 300 x
# 300 images padded to 320 (tiny: 640) without Mosaic / MixUp, BN instead of
# SyncBN, no EMA, and the demo schedule (_base_/demo_schedule.py). Its FS twin:
# fsnet_rtmdet_tiny_demo.py (fs_convert; depthwise convs stay dense).
_base_ = ['./_base_/demo_data.py', './_base_/demo_schedule.py']

norm = dict(type='BN')
act = dict(type='SiLU', inplace=True)
width = 0.25
channels = [int(c * width) for c in (256, 512, 1024)]
model = dict(
    type='RTMDet',
    data_preprocessor=dict(
        type='DetDataPreprocessor', mean=[103.53, 116.28, 123.675],
        std=[57.375, 57.12, 58.395], bgr_to_rgb=False, pad_size_divisor=32,
        batch_augments=None),
    backbone=dict(
        type='CSPNeXt', arch='P5', expand_ratio=0.5, deepen_factor=0.167,
        widen_factor=width, channel_attention=True, norm_cfg=norm,
        act_cfg=act),
    neck=dict(
        type='CSPNeXtPAFPN', in_channels=channels, out_channels=channels[0],
        num_csp_blocks=1, expand_ratio=0.5, norm_cfg=norm, act_cfg=act),
    bbox_head=dict(
        type='RTMDetSepBNHead', num_classes=6, in_channels=channels[0],
        stacked_convs=2, feat_channels=channels[0],
        anchor_generator=dict(type='MlvlPointGenerator', offset=0,
                              strides=[8, 16, 32]),
        bbox_coder=dict(type='DistancePointBBoxCoder'),
        loss_cls=dict(type='QualityFocalLoss', use_sigmoid=True, beta=2.0,
                      loss_weight=1.0),
        loss_bbox=dict(type='GIoULoss', loss_weight=2.0),
        with_objectness=False, exp_on_reg=False, share_conv=True,
        pred_kernel_size=1, norm_cfg=norm, act_cfg=act),
    train_cfg=dict(
        assigner=dict(type='DynamicSoftLabelAssigner', topk=13),
        allowed_border=-1, pos_weight=-1, debug=False),
    test_cfg=dict(
        nms_pre=1000, min_bbox_size=0, score_thr=0.001,
        nms=dict(type='nms', iou_threshold=0.65), max_per_img=100))
# mmdet's RTMDet recipe: no weight decay on norms and biases.
optim_wrapper = dict(paramwise_cfg=dict(
    norm_decay_mult=0, bias_decay_mult=0, bypass_duplicate=True))
