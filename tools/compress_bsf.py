"""Write a compressed checkpoint of a BSF model (binary banks as packed bits;
evaluate it with tools/test.py CONFIG OUT).

    python tools/compress_bsf.py CONFIG CHECKPOINT OUT [--cfg-options K=V ...]
"""
from fsnet_mmdet.tools.baseline_checkpoints import compress_bsf_main

if __name__ == '__main__':
    compress_bsf_main()
