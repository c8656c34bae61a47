# FSNet-2-WQ (paper Table 4: 0.68M effective parameters, 70.00% mAP): FSNet-2
# with 8-bit summaries on load (see fsnet_ssd300_voc_wq.py). Evaluation only.
_base_ = './fsnet2_ssd300_voc.py'

fs_conv = dict(type='FSConv', preset='fsnet2', wq=True)
model = dict(
    backbone=dict(conv_cfg=fs_conv),
    neck=dict(conv_cfg=fs_conv),
    bbox_head=dict(pred_conv_cfg=fs_conv))
