# The dense SSD300-BN at the demo's scale (width 0.25, generated data, 750
# AdamW iterations): the FS demo model with every conv dense. It is the
# trained model that configs/demo/fsreg_ssd300_demo.py compresses into FS
# (README "Compress a trained detector").
_base_ = './fsnet_ssd300_demo.py'

conv = dict(_delete_=True, type='Conv2d')
model = dict(
    backbone=dict(conv_cfg=conv),
    neck=dict(conv_cfg=conv),
    bbox_head=dict(pred_conv_cfg=conv, pred_interleave=False))
