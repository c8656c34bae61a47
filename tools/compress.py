"""Compress a trained dense detector with KSE or LRF, for fine-tuning.

    python tools/compress.py CONFIG CHECKPOINT --method {kse,lrf}
        (--target N|Nk|NM|Rx | --kse-t T | --lrf-ratio P) --out-dir DIR

Writes DIR/config.py (fine-tune: tools/train.py DIR/config.py),
DIR/checkpoint.pth (tools/test.py DIR/config.py DIR/checkpoint.pth) and
DIR/report.json; prints parameters and FLOPs before and after.
"""
from fsnet_mmdet.tools.compress import main

if __name__ == '__main__':
    main()
