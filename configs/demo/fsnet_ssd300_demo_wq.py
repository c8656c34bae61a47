# The demo's FSNet-WQ evaluation: 8-bit summaries on load (see
# configs/fsnet_ssd300_voc_wq.py). Evaluation only.
_base_ = './fsnet_ssd300_demo.py'

fs_conv = dict(type='FSConv', preset='paper', wq=True)
model = dict(
    backbone=dict(conv_cfg=fs_conv),
    neck=dict(conv_cfg=fs_conv),
    bbox_head=dict(pred_conv_cfg=fs_conv))
