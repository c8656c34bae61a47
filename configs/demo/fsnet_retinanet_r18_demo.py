# The FS twin of configs/demo/retinanet_r18_demo.py: every conv of the built
# detector (backbone, FPN, head towers and predictors) made FSConv by
# fs_convert (the paper's Table 1 K3 rule, 1x1 convs 8x). The from-dense
# benchmark's model (docs/from-dense.md, "Beyond SSD"): its predictors stay
# in grid order, as when those numbers were measured. The RetinaNet recipe
# that learns from scratch is fsnet_retinanet_r18_fpn_demo.py
# (docs/detectors.md).
_base_ = './retinanet_r18_demo.py'

model = dict(fs_convert=dict(predictor_order='grid'))
