"""Per-output-channel int8 weights of a dense model, and their compressed checkpoint.

The storage baseline FS-WQ is compared with (issue 22): every conv and linear
weight of a dense detector stored as one signed byte per weight plus one
float32 scale per output channel; everything else unchanged.

Quantization rule (symmetric, per output channel): for output channel k of a
weight W, ``scale_k = max_i |W_k,i| / 127`` (rounded to float32, the stored
value), ``code = clamp(round(W / scale_k), -127, 127)`` with ``round`` half
to even (``torch.round``, Python's ``round``) and the level of a code
``code * scale_k``. The grid is symmetric (-128 is never used), zero is a
level, and an all-zero channel gets scale 0 and codes 0. Symmetric rather
than affine: a weight's distribution is centred on zero, the offset would
cost a second number per channel and an add per weight, and every int8
deployment stack (PyTorch's ``per_channel_symmetric``, ONNX QDQ with zero
point 0, TensorRT) expects it for weights. The output channel is axis 0 of
conv and linear weights and axis 1 of transposed convs.

A compressed int8 checkpoint is a ``torch.save`` file of tensors and plain
values (it loads with ``weights_only=True``), the sibling of the WQ format of
:mod:`fsnet_mmdet.layers.wq`, built with the same packing::

    {'meta': {'format': 'fsnet-int8', 'version': 1, ...},
     'weights': {key: {'axis': int, 'dtype': str}},  # the quantized weights
     'scales': pack_tensors({key: (channels,) float32}),
     'packed': pack_tensors(state dict, int8 codes in place of those weights)}

Loading it (MMEngine's checkpoint loader, so ``tools/test.py``, ``load_from``
and ``init_detector``; :mod:`fsnet_mmdet.engine.compat`) gives the dense model's
state dict with every quantized weight dequantized.
"""
from __future__ import annotations

from typing import Dict, Mapping, Tuple

import torch
from torch import Tensor, nn

from ..utils.io import (has_format, pack_tensors, unpack_format,
                        unpack_tensors)

FORMAT = 'fsnet-int8'
VERSION = 1
#: Largest code magnitude: codes lie in [-QMAX, QMAX].
QMAX = 127


def _check_axis(weight: Tensor, axis: int) -> int:
    if not (isinstance(axis, int) and -weight.dim() <= axis < weight.dim()):
        raise ValueError(f'axis must be an int in [{-weight.dim()}, '
                         f'{weight.dim() - 1}] for a weight of shape '
                         f'{tuple(weight.shape)}, got {axis!r}')
    return axis % weight.dim()


def _channel_view(tensor: Tensor, axis: int) -> Tensor:
    """``tensor`` as (channels, elements per channel), channel axis first."""
    return tensor.movedim(axis, 0).reshape(tensor.shape[axis], -1)


def _per_channel_shape(tensor: Tensor, axis: int) -> Tuple[int, ...]:
    """Shape that broadcasts a (channels,) vector along ``axis``."""
    shape = [1] * tensor.dim()
    shape[axis] = tensor.shape[axis]
    return tuple(shape)


def quantize_per_channel(weight: Tensor, axis: int = 0,
                         name: str = 'weight') -> Tuple[Tensor, Tensor]:
    """Symmetric int8 codes and float32 scales of a weight, per output channel.

    Args:
        weight: floating-point weight, e.g. (K, C, S1, S2) for a conv or
            (out, in) for a linear layer.
        axis: the output-channel axis (0; 1 for transposed convs).
        name: the weight's name, for error messages.

    Returns:
        ``(codes, scales)``: int8 codes of the weight's shape, in
        [-127, 127]; float32 scales of shape (weight.shape[axis],), with
        ``scales[k] = float32(max |W_k| / 127)`` and ``codes =
        clamp(round_half_even(W / scales[k]), -127, 127)``.

    Raises:
        ValueError: the weight is not floating point, holds NaN or infinity,
            or ``axis`` is out of range (the message names the weight).
    """
    if not weight.is_floating_point():
        raise ValueError(f'{name}: int8 quantization needs a floating-point '
                         f'weight, got dtype {weight.dtype}')
    if weight.dim() == 0:
        raise ValueError(f'{name}: a scalar has no output channels')
    axis = _check_axis(weight, axis)
    if not torch.isfinite(weight).all():
        raise ValueError(f'{name}: cannot quantize a weight holding NaN or '
                         f'infinity (the training diverged; check the '
                         f'learning rate)')
    values = weight.detach().double()
    amax = _channel_view(values, axis).abs().amax(dim=1)
    scales = (amax / QMAX).float()  # the stored scale: what codes refer to
    if not torch.isfinite(scales).all():
        raise ValueError(f'{name}: weights beyond float32 range cannot get a '
                         f'float32 scale')
    divisor = scales.double().view(_per_channel_shape(values, axis))
    codes = torch.where(divisor > 0, values / divisor.clamp(min=1e-300),
                        torch.zeros_like(values))
    codes = codes.round_().clamp_(-QMAX, QMAX).to(torch.int8)
    return codes, scales


def dequantize_per_channel(codes: Tensor, scales: Tensor, axis: int = 0,
                           dtype: torch.dtype = torch.float32) -> Tensor:
    """The levels ``codes * scales[k]`` of int8 codes, channel k along ``axis``.

    Args:
        codes: int8 codes, e.g. (K, C, S1, S2).
        scales: (codes.shape[axis],) scales.
        axis: the output-channel axis of ``codes``.
        dtype: result dtype.

    Returns:
        Tensor of the codes' shape.
    """
    axis = _check_axis(codes, axis)
    scale = scales.double().view(_per_channel_shape(codes, axis))
    return (codes.double() * scale).to(dtype)


def fake_quantize_per_channel(weight: Tensor, axis: int = 0) -> Tensor:
    """The weight's int8 levels (quantize, then dequantize), in its dtype."""
    codes, scales = quantize_per_channel(weight, axis)
    return dequantize_per_channel(codes, scales, axis, weight.dtype)


# ------------------------------------------------------------ model level
def int8_weights(model: nn.Module) -> Dict[str, int]:
    """The model's dense conv and linear weights: state-dict key -> channel axis.

    Every ``nn.Linear`` and every conv (``nn.Conv1d/2d/3d``, transposed
    convs, mmcv's wrappers) whose ``weight`` is a parameter of its own;
    layers whose weight is computed from something else (FSConv, FSLinear,
    BSFConv) are not in the list. Transposed convs have their output channels
    on axis 1.
    """
    weights = {}
    # Every name of a shared layer: the state dict holds its weight under each.
    for name, module in model.named_modules(remove_duplicate=False):
        if not isinstance(module, (nn.Linear, nn.modules.conv._ConvNd)):
            continue
        if not isinstance(module._parameters.get('weight'), nn.Parameter):
            continue
        transposed = isinstance(module, nn.modules.conv._ConvTransposeNd)
        weights[f'{name}.weight' if name else 'weight'] = 1 if transposed else 0
    return weights


def packed_bytes(packed: Mapping) -> int:
    """Bytes of tensor data in a :func:`~fsnet_mmdet.utils.io.pack_tensors` result."""
    return sum(t.numel() * t.element_size() for t in packed['data'].values())


def compress_state_dict(state_dict: Mapping[str, Tensor],
                        weights: Mapping[str, int], meta: dict) -> dict:
    """Build a compressed int8 checkpoint from a float state dict.

    Args:
        state_dict: the model's state dict (not modified).
        weights: keys of the weights to quantize -> their output-channel
            axis (:func:`int8_weights`).
        meta: plain metadata to store (str, numbers, lists, dicts).

    Returns:
        The compressed checkpoint (see the module docstring).

    Raises:
        ValueError: a key of ``weights`` is not in the state dict, or a
            weight cannot be quantized (names it).
    """
    missing = sorted(set(weights) - set(state_dict))
    if missing:
        raise ValueError(f'{missing[0]!r} is not in the state dict '
                         f'({len(missing)} missing)')
    tensors, scales, entries = {}, {}, {}
    for key, value in state_dict.items():
        if key in weights:
            tensors[key], scales[key] = quantize_per_channel(value, weights[key],
                                                             key)
            entries[key] = {'axis': weights[key],
                            'dtype': str(value.dtype).replace('torch.', '')}
        else:
            tensors[key] = value
    return {'meta': dict(meta, format=FORMAT, version=VERSION),
            'weights': entries, 'scales': pack_tensors(scales),
            'packed': pack_tensors(tensors)}


def checkpoint_payload_bytes(checkpoint: Mapping) -> int:
    """Bytes of tensor data in a compressed int8 checkpoint: one per code,
    four per scale, the other tensors' own sizes (the file adds the
    records' framing and the entry lists)."""
    return packed_bytes(checkpoint['packed']) + packed_bytes(checkpoint['scales'])


def is_int8_checkpoint(checkpoint) -> bool:
    """Whether a loaded checkpoint is a compressed int8 checkpoint."""
    return has_format(checkpoint, FORMAT)


def decompress(checkpoint: dict, filename: str = '<checkpoint>') -> dict:
    """A compressed int8 checkpoint as an ordinary one with float weights.

    Args:
        checkpoint: a loaded compressed int8 checkpoint.
        filename: the file it came from, for error messages.

    Returns:
        ``{'meta': ..., 'state_dict': ...}``, every quantized weight
        dequantized to its original dtype.

    Raises:
        ValueError: the checkpoint is malformed; the message names the file
            and the first bad entry.
    """
    meta, state_dict = unpack_format(checkpoint, VERSION, 'int8', filename)
    scales = unpack_tensors(checkpoint.get('scales'), filename)
    entries = checkpoint.get('weights')
    if not isinstance(entries, dict):
        raise ValueError(f'{filename}: malformed int8 checkpoint: no weights '
                         f'table')
    for key, entry in entries.items():
        codes, scale = state_dict.get(key), scales.get(key)
        try:
            axis = int(entry['axis'])
            dtype = getattr(torch, entry['dtype'])
        except (KeyError, TypeError, ValueError, AttributeError) as err:
            raise ValueError(f'{filename}: malformed int8 weight {key!r} '
                             f'({err!r}); expected axis and dtype') from err
        if not (isinstance(codes, Tensor) and codes.dtype == torch.int8
                and isinstance(dtype, torch.dtype) and dtype.is_floating_point
                and 0 <= axis < codes.dim()
                and isinstance(scale, Tensor) and scale.dtype == torch.float32
                and tuple(scale.shape) == (codes.shape[axis],)):
            raise ValueError(f'{filename}: malformed int8 weight {key!r}: '
                             f'needs int8 codes, a floating dtype and one '
                             f'float32 scale per channel of axis '
                             f'{entry.get("axis")!r}')
        if not (torch.isfinite(scale).all() and (scale >= 0).all()
                and (codes.numel() == 0 or codes.min() >= -QMAX)):
            raise ValueError(f'{filename}: malformed int8 weight {key!r}: '
                             f'scales must be finite and >= 0, codes in '
                             f'[{-QMAX}, {QMAX}]')
        state_dict[key] = dequantize_per_channel(codes, scale, axis, dtype)
    return {'meta': meta, 'state_dict': state_dict}


def effective_params(num_params: int, quantized: int, channels: int) -> float:
    """Effective parameters of an int8 model, a byte counting 1/4 (as WQ's).

    Args:
        num_params: the float model's parameters.
        quantized: elements of the quantized weights (one byte each).
        channels: their output channels (one float32 scale each).
    """
    return num_params - quantized + quantized / 4 + channels


__all__ = ['FORMAT', 'QMAX', 'VERSION', 'compress_state_dict', 'decompress',
           'dequantize_per_channel', 'effective_params',
           'fake_quantize_per_channel', 'int8_weights', 'is_int8_checkpoint',
           'packed_bytes', 'checkpoint_payload_bytes', 'quantize_per_channel']
