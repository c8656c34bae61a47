# configs/demo/fsnet_retinanet_r18_demo.py with 8-bit summaries (WQ): evaluates
# a compressed checkpoint from tools/quantize.py (or quantizes a float one on
# load).
_base_ = './fsnet_retinanet_r18_demo.py'

model = dict(fs_convert=dict(conv=dict(wq=True)))
