"""``tools/quantize_int8.py``, ``tools/compress_bsf.py``: compressed checkpoints
of the methods FS is compared with (int8 weights of a dense model, binary
stacked filters). The formats are in :mod:`fsnet_mmdet.compression.int8` and
:mod:`fsnet_mmdet.compression.bsf`; both load through MMEngine's checkpoint loader
(``tools/test.py``) into the config's float model.
"""
import argparse
import os
import tempfile
from typing import List, Optional, Tuple

from mmengine.config import DictAction
from torch import nn

from ..compression.bsf import bsf_layers, compress_bsf_state_dict
from ..conversion.checkpoints import check_state_dict, plain_meta
from ..layers.accounting import count_params
from ..compression.int8 import (compress_state_dict, effective_params, int8_weights,
                    packed_bytes, checkpoint_payload_bytes)
from ..utils.io import save_atomic
from . import one_line_errors
from .count_params import build_model_from_config


def check_writable(out: str) -> None:
    """Fail early, before any work, if ``out`` cannot be written.

    Raises:
        ValueError: ``out`` is a directory, or its directory cannot be
            created or written (names the path and the reason).
    """
    if os.path.isdir(out):
        raise ValueError(f'{out}: is a directory; give the file to write')
    directory = os.path.dirname(os.path.abspath(out))
    try:
        os.makedirs(directory, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix='.' + os.path.basename(out) + '.',
                                     suffix='.probe', dir=directory)
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise ValueError(f'{out}: cannot write there '
                         f'({err.strerror or err})') from None


def save(obj, out: str) -> int:
    """:func:`~fsnet_mmdet.utils.io.save_atomic`, an OS error named."""
    try:
        return save_atomic(obj, out)
    except OSError as err:
        raise ValueError(f'{out}: not written ({err.strerror or err})') from None


def load_state(model: nn.Module, checkpoint: str) -> dict:
    """Load a float or compressed (WQ, int8, BSF) checkpoint into the model,
    strictly, through MMEngine's loader; returns its plain metadata."""
    from mmengine.runner.checkpoint import CheckpointLoader
    ckpt = CheckpointLoader.load_checkpoint(checkpoint, map_location='cpu')
    state_dict = ckpt.get('state_dict', ckpt) if isinstance(ckpt, dict) else None
    if not isinstance(state_dict, dict):
        raise ValueError(f'{checkpoint}: holds no state dict')
    state_dict = {k[len('module.'):] if k.startswith('module.') else k: v
                  for k, v in state_dict.items()}
    check_state_dict(model, state_dict, checkpoint)
    model.load_state_dict(state_dict)
    model.eval()
    return plain_meta(ckpt.get('meta', {}) or {})


def _parse(argv: Optional[List[str]], description: str, config: str,
           checkpoint: str, out: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument('config', help=config)
    parser.add_argument('checkpoint', help=checkpoint)
    parser.add_argument('out', help=out)
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config settings, key=value')
    return parser.parse_args(argv)


def _model(args: argparse.Namespace) -> nn.Module:
    return build_model_from_config(args.config, args.cfg_options)


@one_line_errors
def quantize_int8_main(argv: Optional[List[str]] = None) -> None:
    args = _parse(
        argv, 'Write a compressed int8 checkpoint of a dense model: every '
        'conv and linear weight as int8 codes plus one float32 scale per '
        'output channel (symmetric, max |w| -> 127), everything else as it '
        'was. Evaluate it with tools/test.py CONFIG OUT (the same config); '
        'it loads with torch.load(weights_only=True).',
        'config of the dense model', 'its float checkpoint',
        'compressed int8 checkpoint to write')
    model = _model(args)
    weights = int8_weights(model)
    if not weights:
        raise ValueError(f'{args.config}: the model has no dense conv or '
                         f'linear weight, nothing to quantize; {args.out} not '
                         f'written')
    check_writable(args.out)
    meta = load_state(model, args.checkpoint)
    compressed = compress_state_dict(
        model.state_dict(), weights,
        dict(meta, source=os.path.basename(args.checkpoint)))
    size = save(compressed, args.out)
    params = dict(model.named_parameters())
    quantized = sum(params[k].numel() for k in weights)
    channels = sum(params[k].shape[a] for k, a in weights.items())
    total = count_params(model).stored
    effective = effective_params(total, quantized, channels)
    print(f'{args.out}: {size:,} bytes (tensor payload '
          f'{checkpoint_payload_bytes(compressed):,}); {len(weights)} weights, '
          f'{quantized:,} elements, quantized to int8 with {channels:,} '
          f'per-channel scales\nparameters {total:,}; effective parameters '
          f'(a byte counts 1/4) {effective:,.0f}; bytes / (4 x parameters) = '
          f'{size / (4 * total):.3f}')


def _bsf(args: argparse.Namespace) -> Tuple[nn.Module, List[str]]:
    model = _model(args)
    layers = bsf_layers(model)
    if not layers:
        raise ValueError(f'{args.config}: the model has no BSFConv layer, '
                         f'nothing to compress; {args.out} not written')
    return model, layers


@one_line_errors
def compress_bsf_main(argv: Optional[List[str]] = None) -> None:
    args = _parse(
        argv, 'Write a compressed checkpoint of a BSF (binary stacked '
        'filters) model: every BSFConv bank as packed sign bits, its '
        'selection indices in the smallest integer dtype, the rest as it '
        'was. Evaluate it with tools/test.py CONFIG OUT (the same config); '
        'it loads with torch.load(weights_only=True).',
        'config of the BSF model', 'its float checkpoint',
        'compressed BSF checkpoint to write')
    model, layers = _bsf(args)
    check_writable(args.out)
    meta = load_state(model, args.checkpoint)
    compressed = compress_bsf_state_dict(
        model.state_dict(), layers,
        dict(meta, source=os.path.basename(args.checkpoint)))
    size = save(compressed, args.out)
    report = count_params(model)
    bits = report.bits
    print(f'{args.out}: {size:,} bytes (tensor payload '
          f'{packed_bytes(compressed["packed"]):,}); {len(layers)} BSF layers\n'
          f'stored bits {bits:,} ({bits / 8:,.0f} bytes, {bits / 32:,.0f} '
          f'float32-parameter equivalents; dense {report.dense:,} parameters, '
          f'ratio {32 * report.dense / bits:.1f}x)')
