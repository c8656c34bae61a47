# BSF SSD300 at the demo's width on the two real VOC images: every conv of
# the backbone, the extra layers and the head's predictors a BSFConv through
# conv_cfg (conv1_1, 3 input channels, gets one slice of 3 channels).
_base_ = './ssd300_bn_tiny_narrow.py'

bsf_conv = dict(_delete_=True, type='BSFConv', bank_size=16, bank_channels=8)
model = dict(
    backbone=dict(conv_cfg=bsf_conv),
    neck=dict(conv_cfg=bsf_conv),
    bbox_head=dict(pred_conv_cfg=bsf_conv))
