# The FS twin of configs/demo/retinanet_r18_demo.py: every conv of the built
# detector (backbone, FPN, head towers and predictors) made FSConv by
# fs_convert (the paper's Table 1 K3 rule, 1x1 convs 8x).
_base_ = './retinanet_r18_demo.py'

model = dict(fs_convert=dict())
