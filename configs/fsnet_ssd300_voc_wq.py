# FSNet-1-WQ (paper Table 4: 0.45M effective parameters, 67.63% mAP): FSNet-1
# whose summaries are quantized to 8 bits when a checkpoint is loaded, so
# tools/test.py evaluates either a compressed checkpoint (tools/quantize.py)
# or a float FSNet-1 checkpoint (quantized on load). For evaluation only.
_base_ = './fsnet_ssd300_voc.py'

fs_conv = dict(type='FSConv', preset='fsnet1', wq=True)
model = dict(
    backbone=dict(conv_cfg=fs_conv),
    neck=dict(conv_cfg=fs_conv),
    bbox_head=dict(pred_conv_cfg=fs_conv))
