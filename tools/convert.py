"""Start an FS model from a trained dense checkpoint (least-squares summaries).

    python tools/convert.py FS_CONFIG DENSE_CHECKPOINT OUT
"""
from fsnet_mmdet.tools.convert_checkpoints import convert_main

if __name__ == '__main__':
    convert_main()
