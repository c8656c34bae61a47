"""Print a config's per-layer parameter table (dense-equivalent, stored, ratio).

    python tools/count_params.py configs/fsnet_ssd300_voc.py [--totals-only]
"""
import fsnet_mmdet  # noqa: F401  registers FSConv and the FS models
from fsnet_mmdet.tools.count_params import main

if __name__ == '__main__':
    main()
