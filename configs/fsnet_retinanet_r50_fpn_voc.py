# FSNet for any detector, one switch: MMDetection's RetinaNet R-50-FPN on
# VOC07+12 with every conv (backbone, FPN, head towers and the class / box
# predictors that mmdet builds as plain nn.Conv2d) made FSConv by `fs_convert`
# after the model is built (the paper's Table 1 rule, 1x1 convs 8x). Trained
# from scratch like FSNet, so the ImageNet-pretrained init is dropped.
_base_ = 'mmdet::pascal_voc/retinanet_r50_fpn_1x_voc0712.py'
custom_imports = dict(imports=['fsnet_mmdet'], allow_failed_imports=False)

model = dict(backbone=dict(init_cfg=None), fs_convert=dict())
