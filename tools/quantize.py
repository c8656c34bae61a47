"""Write a compressed FSNet-WQ checkpoint (8-bit summaries).

    python tools/quantize.py CONFIG CHECKPOINT OUT
"""
from fsnet_mmdet.tools.convert_checkpoints import quantize_main

if __name__ == '__main__':
    quantize_main()
