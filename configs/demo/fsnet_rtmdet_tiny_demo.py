# The FS twin of rtmdet_tiny_demo.py: every conv with groups=1 FSConv by
# fs_convert (CSPNeXt's depthwise convs stay dense); the class and box
# predictors of each level checked by its head rules (one prior per
# location: grid order, docs/detectors.md).
_base_ = './rtmdet_tiny_demo.py'

model = dict(fs_convert=dict())
