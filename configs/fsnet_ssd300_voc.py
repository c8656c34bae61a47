# FSNet-1 SSD300 (paper Table 4: 1.67M parameters, 67.60% mAP on VOC07 test):
# the SSD300-BN baseline with every conv of the backbone, the extra layers and
# the head's predictors replaced by FSConv with the 'fsnet1' K3 preset.
# pred_interleave: the same output of neighbouring anchors shares weights (not
# the 4 box deltas / C + 1 scores of one anchor); same parameters, measured
# better at demo scale (docs/accuracy.md). The paper leaves the
# predictors' channel order open.
_base_ = './ssd300_bn_voc.py'

fs_conv = dict(type='FSConv', preset='fsnet1')
model = dict(
    backbone=dict(conv_cfg=fs_conv),
    neck=dict(conv_cfg=fs_conv),
    bbox_head=dict(pred_conv_cfg=fs_conv, pred_interleave=True))
