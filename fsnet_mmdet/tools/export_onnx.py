"""``tools/export_onnx.py``: a detector as an ONNX graph that keeps its summaries.

The export itself is :func:`fsnet_mmdet.deploy.export_onnx`.
"""
import argparse
import copy
from typing import List, Optional, Tuple

import torch
from torch import nn

from ..conversion.checkpoints import fs_layers
from ..deploy.onnx_export import (DEFAULT_OPSET, INPUT_NAME, INSTALL_HINT,
                                  SUMMARY_LAYERS,
                                  check_exportable,
                                  export_onnx, payload_bytes, require)
from ..layers.wq import fake_quantize
from ..utils.io import check_output_path
from ..engine.checkpoint import load_into

#: Parity bounds of ``--verify``: the raw head outputs of the ONNX model
#: against the PyTorch model's.
VERIFY_ATOL, VERIFY_RTOL = 1e-4, 1e-3


def config_input_size(cfg) -> Optional[Tuple[int, int]]:
    """(H, W) that the config's test pipeline resizes every image to, or None.

    The pipeline's ``Resize`` with ``keep_ratio=False`` fixes the size (SSD:
    300 x 300); any other pipeline gives images of varying size.
    """
    from mmdet.utils import get_test_pipeline_cfg

    try:
        steps = get_test_pipeline_cfg(cfg)
    except (RuntimeError, KeyError, AttributeError):
        return None
    for step in steps:
        if str(step.get('type', '')).split('.')[-1] == 'Resize' and not step.get(
                'keep_ratio', False) and step.get('scale') is not None:
            scale = step['scale']
            scale = (scale, scale) if isinstance(scale, int) else tuple(scale)
            return int(scale[1]), int(scale[0])  # mmcv's scale is (w, h)
    return None


def reference_model(model: nn.Module, mode: str) -> nn.Module:
    """The PyTorch model whose outputs an export in ``mode`` reproduces:
    with ``'wq'``, a copy whose summaries are quantized to 8 bits as the
    plugin's WQ evaluation does (``FSConv(wq=True)``)."""
    if mode != 'wq':
        return model
    quantized = copy.deepcopy(model)
    with torch.no_grad():
        for name in fs_layers(quantized):
            layer = quantized.get_submodule(name)
            layer.summary.copy_(fake_quantize(layer.summary))
    return quantized


def verify(model: nn.Module, onnx_file: str, mode: str,
           shape: Tuple[int, ...]) -> float:
    """Largest difference between the ONNX model's raw head outputs (in
    onnxruntime, all optimizations) and PyTorch's, on a random input.

    Raises:
        ValueError: some output is beyond ``VERIFY_ATOL + VERIFY_RTOL * |ref|``.
    """
    from ..deploy.ort_inference import ort_session

    session = ort_session(onnx_file, 'all')
    inputs = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = [t for group in reference_model(model, mode).eval()._forward(
            inputs) for t in group]
    outputs = [torch.from_numpy(o) for o in session.run(
        None, {INPUT_NAME: inputs.numpy()})]
    worst = 0.0
    for name, got, want in zip([o.name for o in session.get_outputs()],
                               outputs, expected):
        worst = max(worst, float((got - want).abs().max()))
        if not torch.allclose(got, want, atol=VERIFY_ATOL, rtol=VERIFY_RTOL):
            raise ValueError(
                f'{onnx_file}: written, but its output {name} differs from '
                f'PyTorch\'s by up to {float((got - want).abs().max()):.3g} '
                f'(bounds atol {VERIFY_ATOL}, rtol {VERIFY_RTOL})')
    return worst


def main(argv: Optional[List[str]] = None) -> None:
    from mmengine.config import DictAction

    parser = argparse.ArgumentParser(
        description='Export a single-stage detector (SSD, RetinaNet, ...) '
        'as ONNX, up to the head\'s raw outputs, with every FSConv / '
        'FSLinear weight computed in the graph from its filter summary '
        '(fp32, or the 8-bit WQ codes with --wq): the file holds the '
        'summaries, not the dense weights. Run it with onnxruntime: python '
        '-m fsnet_mmdet.deploy.ort_inference CONFIG OUT.onnx IMAGE. Needs '
        f'the deploy extras: {INSTALL_HINT}.')
    parser.add_argument('config', help='config of the model')
    parser.add_argument('checkpoint', help='its checkpoint (float or '
                        'compressed WQ)')
    parser.add_argument('out', help='ONNX file to write')
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument('--wq', action='store_true',
                      help='store every summary as 8-bit codes (FSNet-WQ, as '
                      'tools/quantize.py), dequantized in the graph')
    mode.add_argument('--baked', action='store_true',
                      help='the ordinary export instead: dense weights '
                      '(tools/bake.py + torch.onnx.export), to compare')
    mode.add_argument('--summary-compute', action='store_true',
                      help='compute FSConvs from their fp32 summaries in '
                      'standard ONNX ops (a 1x1 Conv, one Slice per tap, '
                      'Adds: the summary path, fewer multiply-adds than the '
                      'dense conv for stride-1 spatial kernels); FSLinear '
                      'and FSConvs that cannot (1D layout, DFSNet-moved '
                      'filters) or, with --summary-layers fewer-ops, would '
                      'run more operations (1x1, most stride-2 layers) as '
                      'without the flag')
    parser.add_argument('--summary-layers', choices=SUMMARY_LAYERS,
                        default='fewer-ops',
                        help='with --summary-compute: fewer-ops (default) '
                        'computes from the summary the FSConvs whose summary '
                        'path runs fewer operations at the input size; all, '
                        'every FSConv that can')
    parser.add_argument('--shape', type=int, nargs=2, metavar=('H', 'W'),
                        help='input image size (default: the size the '
                        'config\'s test pipeline resizes to)')
    parser.add_argument('--opset', type=int, default=DEFAULT_OPSET,
                        help=f'ONNX opset, 15..20 (default {DEFAULT_OPSET})')
    parser.add_argument('--verify', action='store_true',
                        help='run the file in onnxruntime on a random input '
                        'and compare the raw outputs with PyTorch\'s')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config settings, key=value')
    args = parser.parse_args(argv)
    mode = ('wq' if args.wq else 'baked' if args.baked else
            'summary' if args.summary_compute else 'fs')
    try:
        require('onnx', 'tools/export_onnx.py')
        if args.verify:
            require('onnxruntime', 'tools/export_onnx.py --verify')
        _export(args, mode)
    except (ValueError, RuntimeError, OSError) as err:
        raise SystemExit(f'error: {err}') from None


def _export(args: argparse.Namespace, mode: str) -> None:
    from mmengine.config import Config

    from .count_params import build_model_from_config

    check_output_path(args.out)  # before minutes of work
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    size = tuple(args.shape) if args.shape else config_input_size(cfg)
    if size is None:
        raise ValueError(f'{args.config}: the test pipeline does not resize '
                         f'to one fixed size; give --shape H W')
    if min(size) < 1:
        raise ValueError(f'--shape must be positive, got {list(size)}')
    model = build_model_from_config(args.config, args.cfg_options)
    try:
        check_exportable(model, mode)
    except ValueError as err:
        raise ValueError(f'{args.config}: {err}; {args.out} not written') from None
    load_into(model, args.checkpoint)
    shape = (1, 3, *size)
    report = export_onnx(model, args.out, mode, shape, args.opset,
                         args.summary_layers)
    payload = payload_bytes(model, mode)
    print(f'{args.out}: {report.bytes:,} bytes, mode {mode}, input '
          f'(N, 3, {size[0]}, {size[1]}), outputs {len(report.output_names)}')
    if mode == 'baked':
        print(f'{report.fs_layers} FS layers baked into dense weights')
    elif mode == 'summary':
        rest = report.fs_layers - report.summary_compute
        print(f'{report.fs_layers} FS layers: {report.summary_compute} FSConvs '
              f'computed from their summaries in standard ops'
              + (f', {rest} with weights computed in the graph from their '
                 f'summaries (functions {", ".join(report.functions)})'
                 if rest else ''))
    else:
        print(f'{report.fs_layers} FS layers: weights computed in the graph '
              f'from their {"8-bit " if mode == "wq" else ""}summaries '
              f'(functions {", ".join(report.functions)})')
    kind = 'dense weights' if mode == 'baked' else 'summaries'
    print(f'tensors: {kind} {payload["summaries"]:,} + other '
          f'{payload["other"]:,} = {payload["total"]:,} bytes; file / '
          f'tensors = {report.bytes / payload["total"]:.3f}')
    if args.verify:
        worst = verify(model, args.out, mode, shape)
        print(f'verified in onnxruntime: raw outputs within {worst:.2g} of '
              f'PyTorch\'s{" WQ model" if mode == "wq" else ""}')

