# The FS twin of retinanet_r18_fpn_demo.py: every conv FSConv by fs_convert
# (the paper's Table 1 K3 rule, 1x1 convs 8x); the class and box predictors
# interleaved by fs_convert's head rules (docs/detectors.md).
_base_ = './retinanet_r18_fpn_demo.py'

model = dict(fs_convert=dict())
