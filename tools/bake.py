"""Export an FS SSD300 as a standard MMDetection SSD300 checkpoint (dense convs).

    python tools/bake.py CONFIG CHECKPOINT OUT
"""
from fsnet_mmdet.tools.convert_checkpoints import bake_main

if __name__ == '__main__':
    bake_main()
