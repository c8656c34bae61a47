# The FS twin of faster-rcnn_r18_fpn_demo.py: every conv FSConv and every
# linear layer (the RoI head's shared FCs and predictors) FSLinear by
# fs_convert; the RPN's and the RoI head's predictors ordered by its head
# rules (docs/detectors.md).
_base_ = './faster-rcnn_r18_fpn_demo.py'

model = dict(fs_convert=dict(linear=dict()))
