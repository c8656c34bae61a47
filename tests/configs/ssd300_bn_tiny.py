# Dense SSD300-BN on the two real VOC images under tests/data: the FSNet-1 tiny
# config with every conv dense (the trained model the regularization tests
# compress).
_base_ = './fsnet_ssd300_tiny.py'

conv = dict(_delete_=True, type='Conv2d')
model = dict(
    backbone=dict(conv_cfg=conv),
    neck=dict(conv_cfg=conv),
    bbox_head=dict(pred_conv_cfg=conv, pred_interleave=False))
train_cfg = dict(max_epochs=1, val_interval=2)
