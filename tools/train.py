"""Train a detector: MMDetection 3.3's ``tools/train.py`` with fsnet_mmdet loaded.

Same arguments and behaviour as MMDetection's own script (it is run as is);
importing ``fsnet_mmdet`` first registers FSConv and the FS models and applies
the compatibility fixes (README "Compatibility"). Usage:

    python tools/train.py CONFIG [--work-dir DIR] [--resume [CKPT]] [--amp]
        [--auto-scale-lr] [--cfg-options K=V ...] [--launcher pytorch]
"""
from fsnet_mmdet.tools import run_mmdet_tool

if __name__ == '__main__':
    run_mmdet_tool('train.py')
