# The tiny test config with FSNet-WQ evaluation (8-bit summaries on load).
_base_ = './fsnet_ssd300_tiny.py'

fs_conv = dict(type='FSConv', preset='fsnet1', wq=True)
model = dict(
    backbone=dict(conv_cfg=fs_conv),
    neck=dict(conv_cfg=fs_conv),
    bbox_head=dict(pred_conv_cfg=fs_conv))
