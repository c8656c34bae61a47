"""Write a compressed int8 checkpoint of a dense model (per-output-channel
int8 conv and linear weights; evaluate it with tools/test.py CONFIG OUT).

    python tools/quantize_int8.py CONFIG CHECKPOINT OUT [--cfg-options K=V ...]
"""
from fsnet_mmdet.tools.baseline_checkpoints import quantize_int8_main

if __name__ == '__main__':
    quantize_int8_main()
