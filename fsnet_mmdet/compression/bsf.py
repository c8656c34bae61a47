"""BSFConv: a conv whose filters are stacked from a small bank of binary filters.

Lan & Lan, "Compressing Deep Convolutional Neural Networks by Stacking
Low-dimensional Binary Convolution Filters" (AAAI 2021, arXiv 2010.02778).
A layer keeps a bank of ``M`` low-dimensional binary (+-1) filters shared by
all its filters; each full filter is a stack of bank filters, one per slice
of the input channels, chosen by a selection index, so the layer stores
bits, not weights, and far fewer than a binary net's one per weight.

Parametrisation (the paper's choices we could not read are fixed by one
documented rule each; docs/compression-methods.md "Binary stacked filters (BSF)"):

* The ``C`` input channels are cut into ``G = C / d`` consecutive slices of
  ``d`` channels (``d = bank_channels``, lowered to ``C`` when larger; it
  must divide ``C``).
* The bank is ``M`` filters of shape (d, S1, S2) (``M = bank_size``, lowered
  to ``K * G`` when larger: a bank filter nobody selects would be stored for
  nothing), trained as real latent weights ``bank`` binarized by sign
  (``b = +1 if w >= 0 else -1``) with a straight-through estimator: the
  gradient of ``b`` passes to ``w`` where ``|w| <= 1`` and is zero elsewhere.
* Output filter ``k`` is ``scale[k] * [b[s(k, 0)], ..., b[s(k, G - 1)]]``
  stacked along the channels: ``W[k, g d:(g + 1) d] = scale[k] b[s(k, g)]``,
  with a real learned per-output-channel ``scale`` (K,) and the usual bias.
* The selection ``s`` (K, G) is fixed at construction, not learned:
  balanced (every bank filter is chosen ``floor`` or ``ceil`` of ``K G / M``
  times) in a random order drawn from a generator seeded with ``seed``; it
  is a persistent buffer ``select``, so a checkpoint carries it. The paper
  also learns the selection (indicator matrices through proxies); we do not.

Forward, two equivalent ways (:func:`bsf_conv2d`):

* ``'weight'``: materialize W (K, C, S1, S2) and run ``F.conv2d``;
* ``'stm'`` (split-transform-merge, the paper's view): convolve each input
  slice with the whole binary bank (one grouped conv with G groups, G M
  output maps), then, for output k, pick map ``s(k, g)`` of every slice g,
  sum them and multiply by ``scale[k]``.

Stored bits of a layer (:func:`layer_bits`): bank ``M d S1 S2``, selection
``K G ceil(log2 M)``, scales ``32 K``, bias ``32 K``. The compressed
checkpoint (:func:`compress_bsf_state_dict`) stores the bank as packed sign
bits and the selection in the smallest integer dtype that holds ``M - 1``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import List, Mapping, NamedTuple, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from mmengine.registry import MODELS
from torch import Tensor, nn

from ..layers.accounting import Storage, StoredLayer, tensor_storage
from ..layers.derived_weight import DerivedWeightMixin
from ..utils.io import has_format, pack_tensors, unpack_format

FORWARD_MODES = ('weight', 'stm')
CHECKPOINT_FORMAT = 'fsnet-bsf'
CHECKPOINT_VERSION = 1


# ------------------------------------------------------------ pure functions
class BSFGeometry(NamedTuple):
    """Shapes of a binary-stacked-filter layer.

    Attributes:
        bank_size: M, binary filters in the bank.
        bank_channels: d, input channels per bank filter (per slice).
        slices: G = C / d, slices of the input channels per output filter.
    """

    bank_size: int
    bank_channels: int
    slices: int


def bsf_geometry(in_channels: int, out_channels: int, bank_size: int,
                     bank_channels: int) -> BSFGeometry:
    """The layer's (M, d, G) from its options (rules in the module docstring).

    Raises:
        ValueError: an option is not a positive int, or ``d`` does not divide
            ``in_channels``; the message names the option and allowed values.
    """
    for option, value in (('bank_size', bank_size),
                          ('bank_channels', bank_channels)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f'{option} must be an int >= 1, got {value!r}')
    d = min(bank_channels, in_channels)
    if in_channels % d:
        divisors = [c for c in range(1, in_channels + 1) if in_channels % c == 0]
        raise ValueError(f'bank_channels={bank_channels} must divide '
                         f'in_channels={in_channels} (or be >= it); allowed: '
                         f'{divisors[:12]}{" ..." if len(divisors) > 12 else ""}')
    slices = in_channels // d
    return BSFGeometry(min(bank_size, out_channels * slices), d, slices)


def balanced_selection(out_channels: int, slices: int, bank_size: int,
                       seed: int = 0) -> Tensor:
    """The fixed selection indices: every bank filter chosen equally often.

    Args:
        out_channels: K.
        slices: G.
        bank_size: M (at most K G).
        seed: seed of the generator that draws the order.

    Returns:
        (K, G) int64 tensor with values in [0, M): ``(p mod M)`` for a random
        permutation p of ``0 .. K G - 1``, so every value occurs
        ``floor(K G / M)`` or ``ceil(K G / M)`` times.
    """
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(out_channels * slices, generator=generator)
    return (order % bank_size).view(out_channels, slices)


class _SignSTE(torch.autograd.Function):
    """sign with +1 at 0; straight-through gradient clipped to ``|w| <= 1``."""

    @staticmethod
    def forward(ctx, latent: Tensor) -> Tensor:
        ctx.save_for_backward(latent)
        one = torch.ones_like(latent)
        return torch.where(latent >= 0, one, -one)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        latent, = ctx.saved_tensors
        return grad * (latent.abs() <= 1).to(grad.dtype)


def binarize(latent: Tensor) -> Tensor:
    """+-1 of the latent bank (``+1`` where ``w >= 0``), straight-through.

    Backward: ``dL/dw = dL/db`` where ``|w| <= 1``, else 0.

    Args:
        latent: the real-valued bank, any shape (M, d, S1, S2).
    """
    return _SignSTE.apply(latent)


def bsf_weight(binary_bank: Tensor, select: Tensor, scale: Tensor) -> Tensor:
    """Materialize the filters: ``W[k, g d:(g + 1) d] = scale[k] b[s(k, g)]``.

    Args:
        binary_bank: (M, d, S1, S2) bank (+-1).
        select: (K, G) integer selection.
        scale: (K,) per-output-channel scale.

    Returns:
        (K, G d, S1, S2) weight.
    """
    out_channels, slices = select.shape
    _, d, s1, s2 = binary_bank.shape
    stacked = binary_bank[select.reshape(-1)].view(out_channels,
                                                   slices * d, s1, s2)
    return stacked * scale.view(-1, 1, 1, 1)


def stm_conv2d(x: Tensor, binary_bank: Tensor, select: Tensor, scale: Tensor,
               bias: Optional[Tensor], stride=1, padding=0,
               dilation=1) -> Tensor:
    """Split-transform-merge forward (the paper's view), zero padding.

    Split ``x`` into G slices of d channels, convolve every slice with every
    bank filter (one grouped conv: G M maps, map ``g M + m`` is slice g with
    bank filter m), then output ``k = scale[k] sum_g map(g M + s(k, g)) +
    bias[k]``.

    Args:
        x: (N, G d, H, W) input.
        binary_bank: (M, d, S1, S2) bank (+-1).
        select: (K, G) integer selection.
        scale: (K,) scale.
        bias: (K,) or None.
        stride, padding, dilation: as ``F.conv2d``.

    Returns:
        (N, K, H', W'), equal to ``F.conv2d(x, bsf_weight(...), bias, ...)``.
    """
    bank_size = binary_bank.shape[0]
    slices = select.shape[1]
    maps = F.conv2d(x, binary_bank.repeat(slices, 1, 1, 1), None, stride,
                    padding, dilation, groups=slices)
    picks = select + torch.arange(slices, device=select.device) * bank_size
    out = maps.index_select(1, picks[:, 0])
    for g in range(1, slices):  # merge: one (N, K, H', W') map per slice
        out = out + maps.index_select(1, picks[:, g])
    out = out * scale.view(1, -1, 1, 1)
    return out if bias is None else out + bias.view(1, -1, 1, 1)


def bsf_conv2d(x: Tensor, latent_bank: Tensor, select: Tensor, scale: Tensor,
               bias: Optional[Tensor], stride=1, padding=0, dilation=1,
               mode: str = 'weight') -> Tensor:
    """The BSF convolution of ``x`` (zero padding), either way.

    Args:
        x: (N, C, H, W).
        latent_bank: (M, d, S1, S2) real latent bank, binarized by
            :func:`binarize` (straight-through).
        select, scale, bias, stride, padding, dilation: as :func:`stm_conv2d`.
        mode: ``'weight'`` (materialized weight + ``F.conv2d``) or
            ``'stm'`` (:func:`stm_conv2d`).

    Returns:
        (N, K, H', W').
    """
    binary = binarize(latent_bank)
    if mode == 'weight':
        return F.conv2d(x, bsf_weight(binary, select, scale), bias, stride,
                        padding, dilation)
    if mode == 'stm':
        return stm_conv2d(x, binary, select, scale, bias, stride, padding,
                          dilation)
    raise ValueError(f'mode must be one of {FORWARD_MODES}, got {mode!r}')


# --------------------------------------------------------------- the layer
@MODELS.register_module('BSFConv')
class BSFConv(DerivedWeightMixin, StoredLayer, nn.Conv2d):
    """2D convolution with filters stacked from a bank of binary filters.

    Lan & Lan, AAAI 2021 (arXiv 2010.02778); the parametrisation is in the
    module docstring. Parameters: ``bank`` (M, d, S1, S2), the real latent
    bank; ``scale`` (K,); ``bias`` (K,). Persistent buffer: ``select``
    (K, G) int64. The signature is ``nn.Conv2d``'s; BSF options come last,
    as keywords. Use it in any MMDetection model with
    ``conv_cfg=dict(type='BSFConv', ...)``, or convert a built model's convs
    with ``fs_convert=dict(conv=dict(type='BSFConv', ...))``.

    Initialization: the latent bank is uniform in [-1, 1] (random signs, all
    inside the straight-through window), ``scale`` is ``1 / sqrt(3 fan_in)``
    so the filters have ``nn.Conv2d``'s default variance, and the bias
    ``nn.Conv2d``'s default. ``weight`` is the materialized (K, C, S1, S2)
    weight, detached; an initializer that writes into it (``nn.init.*_``,
    MMEngine's ``init_cfg``, mmcv's ``ConvModule``) sets each output
    channel's ``scale`` to the root mean square of what it wrote (so the
    layer's output variance is the initializer's; the signs stay the
    bank's). The write is applied the next time any parameter, buffer or
    ``weight`` of the layer is read, and before forward and state_dict.

    Args:
        in_channels, out_channels, kernel_size, stride, padding, dilation,
        groups, bias, padding_mode, device, dtype: as ``nn.Conv2d``;
            ``groups`` must be 1.
        bank_size: M, binary filters in the bank (lowered to K G).
        bank_channels: d, input channels of a bank filter (lowered to C;
            must divide C).
        seed: seed of the fixed, balanced selection (:func:`balanced_selection`).
        forward_mode: ``'weight'`` (default: materialized weight and one
            ``F.conv2d``) or ``'stm'`` (split-transform-merge).
    """

    def __init__(self,
                 in_channels: int,
                 out_channels: int,
                 kernel_size,
                 stride=1,
                 padding=0,
                 dilation=1,
                 groups: int = 1,
                 bias: bool = True,
                 padding_mode: str = 'zeros',
                 device=None,
                 dtype=None,
                 *,
                 bank_size: int = 64,
                 bank_channels: int = 16,
                 seed: int = 0,
                 forward_mode: str = 'weight') -> None:
        if groups != 1:
            raise ValueError(f'BSFConv supports groups=1 only, got groups={groups}')
        if forward_mode not in FORWARD_MODES:
            raise ValueError(f'forward_mode must be one of {FORWARD_MODES}, '
                             f'got {forward_mode!r}')
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ValueError(f'seed must be an int, got {seed!r}')
        # nn.Conv2d sets every attribute; its dense weight is created on the
        # meta device (no memory) and replaced by the bank.
        super().__init__(in_channels, out_channels, kernel_size, stride,
                         padding, dilation, groups, bias, padding_mode,
                         device='meta', dtype=dtype)
        del self._parameters['weight']
        self.geometry = bsf_geometry(in_channels, out_channels, bank_size,
                                         bank_channels)
        self.seed = seed
        self.forward_mode = forward_mode
        factory = dict(device=device, dtype=dtype)
        m, d, slices = self.geometry
        self.bank = nn.Parameter(torch.empty(m, d, *self.kernel_size, **factory))
        self.scale = nn.Parameter(torch.empty(out_channels, **factory))
        if bias:
            self.bias = nn.Parameter(torch.empty(out_channels, **factory))
        self.register_buffer('select', balanced_selection(
            out_channels, slices, m, seed).to(device))
        self.reset_parameters()

    # ---------------------------------------------------------------- init
    def reset_parameters(self) -> None:
        """Latent bank U(-1, 1); filters of ``nn.Conv2d``'s default variance."""
        if 'bank' not in self._parameters:
            return  # called from nn.Conv2d.__init__ before the bank exists
        fan_in = self.in_channels * math.prod(self.kernel_size)
        with torch.no_grad():
            self.bank.uniform_(-1.0, 1.0)
            self.scale.fill_(1.0 / math.sqrt(3 * fan_in))
            if self.bias is not None:
                bound = 1.0 / math.sqrt(fan_in)
                self.bias.uniform_(-bound, bound)
        self._dense = None

    def _detached_weight(self) -> Tensor:
        """The materialized (K, C, S1, S2) weight, detached."""
        with torch.no_grad():
            return self.materialize()

    def _absorb_weight(self, dense: Tensor) -> None:
        """A write to ``weight`` sets each channel's scale to its RMS."""
        with torch.no_grad():
            self.scale.copy_(dense.reshape(dense.shape[0], -1).pow(2).mean(1).sqrt())

    # ------------------------------------------------------------- forward
    def materialize(self) -> Tensor:
        """The (K, C, S1, S2) weight, differentiable (straight-through)."""
        return bsf_weight(binarize(self.bank), self.select, self.scale)

    def forward(self, x: Tensor) -> Tensor:
        """Convolve ``x`` (N, C, H, W): (N, K, H', W')."""
        self._write_back()
        padding = self.padding
        if self.padding_mode != 'zeros':
            x = F.pad(x, self._reversed_padding_repeated_twice,
                      mode=self.padding_mode)
            padding = 0
        return bsf_conv2d(x, self.bank, self.select, self.scale, self.bias,
                          self.stride, padding, self.dilation,
                          self.forward_mode)

    # --------------------------------------------------------- accounting
    def storage(self) -> Storage:
        """Parameters: the trained real tensors (latent bank, scales,
        bias); bits: :func:`layer_bits` (one per bank sign, the selection
        indices at ``ceil(log2 M)``, scales and bias as float32)."""
        return Storage(tensor_storage(self.parameters(recurse=False)).params,
                       layer_bits(self).total)

    # -------------------------------------------------------------- misc
    @classmethod
    def from_conv2d(cls, conv: nn.Conv2d, **bsf_options) -> 'BSFConv':
        """A BSFConv of ``conv``'s shape carrying its magnitude and bias.

        Same shapes, stride, padding, dilation and bias; each channel's scale
        is the root mean square of ``conv``'s filter (the signs are the
        bank's own: a BSF layer is trained, not fitted).
        """
        bsf = cls(conv.in_channels, conv.out_channels, conv.kernel_size,
                  conv.stride, conv.padding, conv.dilation, conv.groups,
                  conv.bias is not None, conv.padding_mode,
                  device=conv.weight.device, dtype=conv.weight.dtype,
                  **bsf_options)
        with torch.no_grad():
            bsf.weight.copy_(conv.weight)
            if conv.bias is not None:
                bsf.bias.copy_(conv.bias)
        bsf._write_back()
        return bsf

    def to_conv2d(self) -> nn.Conv2d:
        """Bake: a plain ``nn.Conv2d`` with the materialized weight, same output."""
        conv = nn.Conv2d(self.in_channels, self.out_channels, self.kernel_size,
                         self.stride, self.padding, self.dilation, 1,
                         self.bias is not None, self.padding_mode,
                         device=self.bank.device, dtype=self.bank.dtype)
        with torch.no_grad():
            conv.weight.copy_(self.weight)
            if self.bias is not None:
                conv.bias.copy_(self.bias)
        return conv

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict,
                              missing_keys, unexpected_keys, error_msgs):
        key = prefix + 'select'
        select = state_dict.get(key)
        if select is not None and tuple(select.shape) == tuple(
                self.select.shape) and select.numel() and not (
                    0 <= int(select.min()) and
                    int(select.max()) < self.geometry.bank_size):
            raise ValueError(f'{key}: selection indices must lie in '
                             f'[0, {self.geometry.bank_size}) (bank_size), got '
                             f'[{int(select.min())}, {int(select.max())}]')
        super()._load_from_state_dict(state_dict, prefix, local_metadata,
                                      strict, missing_keys, unexpected_keys,
                                      error_msgs)

    def extra_repr(self) -> str:
        m, d, slices = self.geometry
        return (f'{super().extra_repr()}, bank_size={m}, bank_channels={d}, '
                f'slices={slices}, seed={self.seed}, '
                f'forward_mode={self.forward_mode!r}')


# ----------------------------------------------------------------- bits
def index_bits(bank_size: int) -> int:
    """Bits of one selection index: ``ceil(log2 M)`` (0 for M = 1)."""
    return (bank_size - 1).bit_length()


@dataclass(frozen=True)
class LayerBits:
    """Stored bits of one BSF layer.

    Attributes:
        bank: ``M d S1 S2`` (one per binary weight).
        index: ``K G ceil(log2 M)``.
        scale: ``32 K`` (float32).
        bias: ``32 K`` with a bias, else 0.
    """

    bank: int
    index: int
    scale: int
    bias: int

    @property
    def total(self) -> int:
        return self.bank + self.index + self.scale + self.bias


def layer_bits(layer: BSFConv) -> LayerBits:
    """Exact stored bits of a BSF layer (scales and bias as float32)."""
    m, _, slices = layer.geometry
    bias = 32 * layer.bias.numel() if layer.bias is not None else 0
    return LayerBits(layer.bank.numel(),
                     layer.out_channels * slices * index_bits(m),
                     32 * layer.scale.numel(), bias)


# ------------------------------------------------------ compressed checkpoint
def index_dtype(bank_size: int) -> torch.dtype:
    """Smallest integer dtype holding 0 .. M - 1: uint8, int16 or int32."""
    if bank_size <= 2**8:
        return torch.uint8
    if bank_size <= 2**15:
        return torch.int16
    return torch.int32


def bsf_layers(model: nn.Module) -> List[str]:
    """Names of the model's BSF layers (a shared one under each of its names,
    as in the state dict)."""
    return [n for n, m in model.named_modules(remove_duplicate=False)
            if isinstance(m, BSFConv)]


def _keys(name: str) -> Tuple[str, str]:
    """State-dict keys of a BSF layer's bank and selection ('' for the model
    itself)."""
    prefix = f'{name}.' if name else ''
    return prefix + 'bank', prefix + 'select'


def compress_bsf_state_dict(state_dict: Mapping[str, Tensor],
                            layers: Sequence[str], meta: dict) -> dict:
    """Build a compressed BSF checkpoint from a float state dict.

    For every BSF layer ``name``: ``name.bank`` is stored as its packed sign
    bits (``numpy.packbits`` of ``bank >= 0``, uint8, ``ceil(M d S1 S2 / 8)``
    bytes) and ``name.select`` in :func:`index_dtype`; everything else
    (scales, biases, other layers, BatchNorm) unchanged, packed per dtype with
    :func:`~fsnet_mmdet.utils.io.pack_tensors`::

        {'meta': {'format': 'fsnet-bsf', 'version': 1, ...},
         'layers': {name: {'bank_shape': [M, d, S1, S2], 'dtype': str}},
         'packed': {'data': {dtype: flat}, 'entries': [...]}}

    It loads with ``torch.load(weights_only=True)``; MMEngine's loader (and
    so ``tools/test.py``) restores the bank as +-1, which gives the same
    outputs as the latent bank (only signs are used).

    Args:
        state_dict: the BSF model's state dict (not modified).
        layers: names of its BSF layers (:func:`bsf_layers`).
        meta: plain metadata to store.

    Returns:
        The compressed checkpoint.

    Raises:
        ValueError: a layer's bank or selection is missing or malformed, or
            the bank holds NaN (names the entry).
    """
    tensors, table = dict(state_dict), {}
    for name in layers:
        bank_key, select_key = _keys(name)
        bank, select = state_dict.get(bank_key), state_dict.get(select_key)
        if not isinstance(bank, Tensor) or bank.dim() != 4 or not \
                bank.is_floating_point():
            raise ValueError(f'{bank_key}: no (M, d, S1, S2) floating-point '
                             f'bank in the state dict')
        if torch.isnan(bank).any():
            raise ValueError(f'{bank_key}: the latent bank holds NaN (the '
                             f'training diverged; check the learning rate)')
        m = bank.shape[0]
        if not isinstance(select, Tensor) or select.dim() != 2 or (
                select.numel() and not (0 <= int(select.min()) and
                                        int(select.max()) < m)):
            raise ValueError(f'{select_key}: needs a (K, G) selection with '
                             f'indices in [0, {m})')
        tensors[bank_key] = torch.from_numpy(np.packbits(
            (bank >= 0).reshape(-1).cpu().numpy()))
        tensors[select_key] = select.to(index_dtype(m))
        table[name] = {'bank_shape': list(bank.shape),
                       'dtype': str(bank.dtype).replace('torch.', '')}
    return {'meta': dict(meta, format=CHECKPOINT_FORMAT,
                         version=CHECKPOINT_VERSION),
            'layers': table, 'packed': pack_tensors(tensors)}


def is_bsf_checkpoint(checkpoint) -> bool:
    """Whether a loaded checkpoint is a compressed BSF checkpoint."""
    return has_format(checkpoint, CHECKPOINT_FORMAT)


def decompress_bsf(checkpoint: dict, filename: str = '<checkpoint>') -> dict:
    """A compressed BSF checkpoint as an ordinary one.

    Returns:
        ``{'meta': ..., 'state_dict': ...}`` with every bank as +-1 of its
        dtype and every selection as int64.

    Raises:
        ValueError: the checkpoint is malformed; the message names the file
            and the first bad entry.
    """
    meta, state_dict = unpack_format(checkpoint, CHECKPOINT_VERSION, 'BSF',
                                     filename)
    table = checkpoint.get('layers')
    if not isinstance(table, dict):
        raise ValueError(f'{filename}: malformed BSF checkpoint: no layers table')
    for name, entry in table.items():
        bank_key, select_key = _keys(name)
        bits, select = state_dict.get(bank_key), state_dict.get(select_key)
        try:
            shape = [int(s) for s in entry['bank_shape']]
            dtype = getattr(torch, entry['dtype'])
        except (KeyError, TypeError, ValueError, AttributeError) as err:
            raise ValueError(f'{filename}: malformed BSF layer {name!r} '
                             f'({err!r}); expected bank_shape and dtype') from err
        count = math.prod(shape)
        if not (len(shape) == 4 and min(shape) >= 1
                and isinstance(dtype, torch.dtype) and dtype.is_floating_point
                and isinstance(bits, Tensor) and bits.dtype == torch.uint8
                and bits.numel() == -(-count // 8)):
            raise ValueError(f'{filename}: malformed BSF layer {name!r}: needs '
                             f'{-(-count // 8)} uint8 bytes of bank bits for '
                             f'bank_shape {entry.get("bank_shape")!r}')
        if not (isinstance(select, Tensor) and select.dim() == 2 and
                not select.is_floating_point() and (select.numel() == 0 or (
                    int(select.min()) >= 0 and int(select.max()) < shape[0]))):
            raise ValueError(f'{filename}: malformed BSF layer {name!r}: its '
                             f'selection must be (K, G) integers in '
                             f'[0, {shape[0]})')
        signs = torch.from_numpy(np.unpackbits(
            bits.cpu().numpy(), count=count).astype(bool)).view(shape)
        one = torch.ones(shape, dtype=dtype)
        state_dict[bank_key] = torch.where(signs, one, -one)
        state_dict[select_key] = select.long()
    return {'meta': meta, 'state_dict': state_dict}


__all__ = ['BSFConv', 'BSFGeometry', 'LayerBits', 'balanced_selection',
           'binarize', 'bsf_conv2d', 'bsf_layers', 'bsf_weight',
           'compress_bsf_state_dict', 'decompress_bsf',
           'index_bits', 'index_dtype', 'is_bsf_checkpoint', 'layer_bits',
           'bsf_geometry', 'stm_conv2d']
