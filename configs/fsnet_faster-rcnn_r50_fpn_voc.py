# FSNet for any detector, one switch: MMDetection's Faster R-CNN R-50-FPN on
# VOC07+12 with every conv (ResNet, FPN, RPN) made FSConv and every linear
# layer of the RoI head (two shared FCs, class and box predictors) made
# FSLinear (1D summary, 8x) by `fs_convert` after the model is built. Trained
# from scratch like FSNet, so the ImageNet-pretrained init is dropped.
_base_ = 'mmdet::pascal_voc/faster-rcnn_r50_fpn_1x_voc0712.py'
custom_imports = dict(imports=['fsnet_mmdet'], allow_failed_imports=False)

model = dict(backbone=dict(init_cfg=None), fs_convert=dict(linear=dict()))
