"""8-bit weight quantization (WQ) of filter summaries and compressed checkpoints.

FSNet-WQ (paper Sec. 3.1): once, after training, per FS layer, 256 levels are
set evenly between the minimum and the maximum of the layer's summary and
every element is replaced by its nearest level. A quantized summary is stored
as one byte per element plus the original minimum and maximum; it counts as
1/4 of a parameter per element (effective parameters).

A *compressed checkpoint* is a ``torch.save`` file of tensors and plain Python
values only (it loads with ``weights_only=True``)::

    {'meta': {'format': 'fsnet-wq', 'version': 1, ...},
     'summaries': {name: {'min': float, 'max': float}},  # quantized summaries
     'packed': {'data': {dtype: flat tensor},            # one per dtype
                'entries': [[name, dtype, shape, offset], ...]}}

``packed`` holds the uint8 codes of every summary and every other state-dict
tensor unchanged, concatenated per dtype: a file of a few large records, so
the size is the payload (a record costs ~300 bytes of zip and pickle framing,
and an SSD300 has ~160 tensors).
"""
from __future__ import annotations

import math
from typing import Mapping, Tuple

import torch
from torch import Tensor

from ..utils.io import has_format, pack_tensors, unpack_format

LEVELS = 256
FORMAT = 'fsnet-wq'
VERSION = 1


def quantize(summary: Tensor) -> Tuple[Tensor, float, float]:
    """Quantize a summary to 256 evenly spaced levels between its min and max.

    Args:
        summary: (Cm, Hm, Wm) floating-point summary.

    Returns:
        ``(codes, lo, hi)``: uint8 codes of the summary's shape, the level of
        code ``c`` being ``lo + c * (hi - lo) / 255``; ``lo`` and ``hi`` are the
        summary's min and max as Python floats.

    Raises:
        ValueError: the summary holds NaN or infinity.
    """
    if not torch.isfinite(summary).all():
        raise ValueError('cannot quantize a summary holding NaN or infinity '
                         '(the training diverged; check the learning rate)')
    values = summary.detach().double()
    lo, hi = values.min().item(), values.max().item()
    if hi == lo:
        return torch.zeros_like(summary, dtype=torch.uint8), lo, hi
    codes = ((values - lo) * ((LEVELS - 1) / (hi - lo))).round_()
    return codes.to(torch.uint8), lo, hi


def dequantize(codes: Tensor, lo: float, hi: float,
               dtype: torch.dtype = torch.float32) -> Tensor:
    """The levels of ``codes``: ``lo + codes * (hi - lo) / 255``.

    Args:
        codes: uint8 codes.
        lo: the level of code 0.
        hi: the level of code 255.
        dtype: result dtype.

    Returns:
        Tensor of the codes' shape.
    """
    step = (hi - lo) / (LEVELS - 1)
    return (codes.double() * step + lo).to(dtype)


def fake_quantize(summary: Tensor) -> Tensor:
    """``dequantize(*quantize(summary))``, in the summary's dtype."""
    return dequantize(*quantize(summary), dtype=summary.dtype)


def compress_state_dict(state_dict: Mapping[str, Tensor],
                        summary_keys, meta: dict) -> dict:
    """Build a compressed checkpoint from a float state dict.

    Args:
        state_dict: the model's state dict.
        summary_keys: keys of the FS summaries to quantize.
        meta: plain metadata to store (str, numbers, lists, dicts).

    Returns:
        The compressed checkpoint (see the module docstring).
    """
    summary_keys = set(summary_keys)
    tensors, summaries = {}, {}
    for key, value in state_dict.items():
        if key in summary_keys:
            tensors[key], lo, hi = quantize(value)
            summaries[key] = {'min': lo, 'max': hi}
        else:
            tensors[key] = value
    return {'meta': dict(meta, format=FORMAT, version=VERSION),
            'summaries': summaries, 'packed': pack_tensors(tensors)}


def is_compressed(checkpoint) -> bool:
    """Whether a loaded checkpoint is a compressed (WQ) checkpoint."""
    return has_format(checkpoint, FORMAT)


def decompress(checkpoint: dict, filename: str = '<checkpoint>') -> dict:
    """A compressed checkpoint as an ordinary one with float summaries.

    Args:
        checkpoint: a loaded compressed checkpoint.
        filename: the file it came from, for error messages.

    Returns:
        ``{'meta': ..., 'state_dict': ...}`` with every summary dequantized.

    Raises:
        ValueError: the checkpoint is malformed; the message names the file
            and the first bad entry.
    """
    meta, state_dict = unpack_format(checkpoint, VERSION, 'compressed',
                                     filename)
    for key, entry in checkpoint.get('summaries', {}).items():
        codes = state_dict.get(key)
        try:
            lo, hi = float(entry['min']), float(entry['max'])
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(f'{filename}: malformed quantized summary {key!r} '
                             f'({err!r}); expected min and max') from err
        if not (isinstance(codes, Tensor) and codes.dtype == torch.uint8
                and math.isfinite(lo) and math.isfinite(hi) and lo <= hi):
            raise ValueError(f'{filename}: malformed quantized summary {key!r}: '
                             f'needs uint8 codes and finite min <= max')
        state_dict[key] = dequantize(codes, lo, hi)
    return {'meta': meta, 'state_dict': state_dict}

