"""Test (and evaluate) a detector: MMDetection 3.3's ``tools/test.py`` with fsnet_mmdet loaded.

Same arguments and behaviour as MMDetection's own script (it is run as is);
importing ``fsnet_mmdet`` first registers FSConv and the FS models and applies
the compatibility fixes (README "Compatibility"). Usage:

    python tools/test.py CONFIG CHECKPOINT [--work-dir DIR] [--out FILE.pkl]
        [--show-dir DIR] [--cfg-options K=V ...] [--launcher pytorch] [--tta]
"""
from fsnet_mmdet.tools import run_mmdet_tool

if __name__ == '__main__':
    run_mmdet_tool('test.py')
