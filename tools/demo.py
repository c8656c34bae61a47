"""The main job (``make demo``): generate data, train FSNet SSD300 from scratch,
evaluate, quantize, evaluate again, and draw the results.

    python tools/demo.py [--work-dir work_dirs/demo] [--force]
"""
from fsnet_mmdet.tools.demo import main

if __name__ == '__main__':
    main()
