# FSConv reused outside SSD: MMDetection's RetinaNet R-50-FPN on VOC07+12 with
# every conv of the backbone, the FPN and the head towers made FSConv through
# conv_cfg (the paper's Table 1 rule, 1x1 convs 8x). Trained from scratch like
# FSNet, so the ImageNet-pretrained init (dense weights) is dropped.
_base_ = 'mmdet::pascal_voc/retinanet_r50_fpn_1x_voc0712.py'
custom_imports = dict(imports=['fsnet_mmdet'], allow_failed_imports=False)

fs_conv = dict(type='FSConv')
model = dict(
    backbone=dict(conv_cfg=fs_conv, init_cfg=None),
    neck=dict(conv_cfg=fs_conv),
    bbox_head=dict(conv_cfg=fs_conv))
