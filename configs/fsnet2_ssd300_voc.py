# FSNet-2 SSD300 (paper Table 4: 2.59M parameters, 70.14% mAP on VOC07 test):
# as FSNet-1 with the 'fsnet2' K3 preset (smaller channel sampling numbers).
_base_ = './fsnet_ssd300_voc.py'

fs_conv = dict(type='FSConv', preset='fsnet2')
model = dict(
    backbone=dict(conv_cfg=fs_conv),
    neck=dict(conv_cfg=fs_conv),
    bbox_head=dict(pred_conv_cfg=fs_conv))
