"""Export a detector as ONNX with every FS layer's weight computed from its summary.

    python tools/export_onnx.py CONFIG CHECKPOINT OUT.onnx [--wq | --baked | --summary-compute] [--verify]
"""
from fsnet_mmdet.tools.export_onnx import main

if __name__ == '__main__':
    main()
