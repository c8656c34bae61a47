# The dense SSD300-BN test config at the demo's width (0.25): the same two
# real VOC images, a 16x smaller model for fast checkpoint tests.
_base_ = './ssd300_bn_tiny.py'

widen = 0.25
channels = [int(c * widen) for c in (512, 1024, 512, 256, 256, 256)]
model = dict(
    backbone=dict(widen_factor=widen),
    neck=dict(in_channels=channels[:2], out_channels=channels),
    bbox_head=dict(in_channels=channels))
