# The FS twin of rtmdet_tiny_demo.py: every conv with groups=1 of the
# backbone and neck FSConv by fs_convert (CSPNeXt's depthwise convs stay
# dense); the head stays dense. With an FS head the classifier stalled on 2
# of 3 seeds (0.684, 0.299, 0.191 mAP@0.5; dense 0.803, 0.826, 0.760); with the head
# dense it learned on all 3 (0.664, 0.766, 0.730) at 410,350 parameters
# against 277,598 (docs/detectors.md; benchmarks/bench_detectors.py variants
# fs and fs-dense-head).
_base_ = './rtmdet_tiny_demo.py'

model = dict(fs_convert=dict(exclude=['bbox_head.*']))
