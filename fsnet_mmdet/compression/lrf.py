"""LRF: linearly replaceable filters, channel pruning with weights compensation.

Joo et al., "Linearly Replaceable Filters for Deep Network Channel Pruning",
AAAI 2021 (authors' code: jdg105/linearly-replaceable-filter-pruning,
``main_pruning.py``). Data-free, one channel at a time:

1. Every filter of a layer (flattened) is fitted by least squares as a linear
   combination of the layer's other filters: ``f_m ~ sum_i lambda_i f_i``,
   residual ``eps_m`` (:func:`replaceability`).
2. The channel with the smallest ``||eps_m|| * ||W'[:, m]||`` goes, W' the
   weights that read it in the next layer(s) (the authors' criterion).
3. Weights compensation: since the removed output is about
   ``sum_i lambda_i`` times the others, the next layer's weights on channel
   m are added onto the others: ``W'[:, i] += lambda_i W'[:, m]``
   (:func:`compensate`); then its input slice m is removed.
4. Repeat to the target (:func:`lrf_prune_channels`), then fine-tune.

The paper puts identity 1x1 convs around every KxK conv so that the layer
compensated is always linear next to the one pruned. Here the pair is the
detector's own: conv -> BN -> ReLU (-> max-pool) -> conv, and the result a
physically smaller conv pair. Our rule for what lies between (one rule,
:func:`affine_filters`): BN (eval mode) and the conv's bias are folded into
the fitted vectors, each filter fitted as ``[s_c W_c, t_c]`` with
``z_c = s_c (W_c * x) + t_c`` the BN output, so a combination that is exact
on these vectors reproduces the BN output exactly, constant included (at
every pixel, padding or not); ReLU, max-pooling and SSD's L2Norm are taken
as the identity (exact for an exact combination when no ReLU is between,
or when the combination is a single non-negative multiple).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

#: Ridge of the scoring fits, relative to the mean squared filter norm: it
#: keeps the Gram matrix invertible when filters are exactly dependent.
RIDGE = 1e-10


# ---------------------------------------------------------- pure functions
def affine_filters(weight: Tensor, scale: Optional[Tensor] = None,
                   shift: Optional[Tensor] = None) -> Tensor:
    """The vectors LRF fits: ``[scale_c * W_c.flatten(), shift_c]``.

    Args:
        weight: (K, C, kh, kw) conv weight.
        scale: (K,) per-channel scale after the conv (BN's
            ``gamma / sqrt(var + eps)``); None: 1.
        shift: (K,) per-channel constant after the conv (BN's
            ``beta + scale * (bias - mean)``, or the bias); None: 0.

    Returns:
        (K, C kh kw + 1) float64.
    """
    k = weight.shape[0]
    w = weight.detach().double().reshape(k, -1)
    if scale is not None:
        w = w * scale.detach().double()[:, None]
    t = (shift.detach().double() if shift is not None
         else torch.zeros(k, dtype=torch.float64))
    return torch.cat([w, t[:, None]], 1)


def replaceability(filters: Tensor, ridge: float = RIDGE
                   ) -> Tuple[Tensor, Tensor]:
    """How well each filter is a linear combination of the others.

    For every m, ``lambda_m = argmin ||f_m - sum_{i != m} lambda_i f_i||^2
    + r ||lambda||^2`` with a tiny ridge ``r = ridge * mean_i ||f_i||^2``,
    from one inverse ``P = (F F^T + r I)^-1``:
    ``lambda_m,i = -P[m, i] / P[m, m]`` and
    ``||eps_m||^2 = 1 / P[m, m] - r (1 + ||lambda_m||^2)``.

    Args:
        filters: (K, D) float64, one filter per row, K >= 2.
        ridge: relative ridge.

    Returns:
        ``(residuals, coefficients)``: (K,) residual norms ``||eps_m||`` and
        (K, K) coefficients, row m the combination for filter m (zero
        diagonal).
    """
    return _replaceability(filters @ filters.t(), ridge)


def _ridge(gram: Tensor, ridge: float) -> float:
    r = ridge * float(gram.diagonal().mean()) if len(gram) else 0.0
    return r if r > 0 else ridge


def _replaceability(gram: Tensor, ridge: float) -> Tuple[Tensor, Tensor]:
    """:func:`replaceability` from the Gram matrix ``F F^T`` (K, K)."""
    k = gram.shape[0]
    r = _ridge(gram, ridge)
    p = torch.cholesky_inverse(torch.linalg.cholesky(
        gram + r * torch.eye(k, dtype=gram.dtype)))
    diag = p.diagonal()
    coeff = -p / diag[:, None]
    coeff.fill_diagonal_(0)
    sq = 1 / diag - r * (1 + coeff.pow(2).sum(1))
    return sq.clamp(min=0).sqrt(), coeff


def combination(gram: Tensor, m: int, ridge: float = RIDGE,
                refinements: int = 3) -> Tensor:
    """Least-squares coefficients of filter m on the others, from ``F F^T``.

    The normal equations ``G_r lambda = g`` (G_r the others' Gram matrix, g
    their products with f_m), solved with the tiny ridge and then refined
    (``lambda += (G_r + r I)^-1 (g - G_r lambda)``), which removes the
    ridge's bias wherever G_r is not singular: an exact combination is
    recovered to rounding.

    Returns:
        (K,) coefficients, 0 at m.
    """
    k = gram.shape[0]
    others = [i for i in range(k) if i != m]
    g_r = gram[others][:, others]
    g = gram[others, m][:, None]
    factor = torch.linalg.cholesky(
        g_r + _ridge(gram, ridge) * torch.eye(k - 1, dtype=gram.dtype))
    lam = torch.cholesky_solve(g, factor)
    for _ in range(refinements):
        lam = lam + torch.cholesky_solve(g - g_r @ lam, factor)
    out = torch.zeros(k, dtype=gram.dtype)
    out[others] = lam[:, 0]
    return out


def compensate(consumer: Tensor, m: int, coeff: Tensor,
               channel_scale: Optional[Tensor] = None) -> Tensor:
    """Weights compensation of one consumer for removing its input channel m.

    ``W'[:, i] += lambda_i (g_m / g_i) W'[:, m]`` for every i != m, then
    input slice m is dropped. ``g`` is a per-channel factor between the
    producer and this consumer (SSD's L2Norm weight); None: 1.

    Args:
        consumer: (O, K, kh, kw) weight reading the K channels.
        m: the removed channel.
        coeff: (K,) coefficients of channel m's combination (``coeff[m]``
            is ignored).
        channel_scale: (K,) g, or None.

    Returns:
        (O, K - 1, kh, kw) in ``consumer``'s dtype.
    """
    lam = coeff.double().clone()
    lam[m] = 0
    if channel_scale is not None:
        g = channel_scale.double()
        lam = lam * g[m] / g
    new = consumer.double() + consumer.double()[:, m:m + 1] * lam.view(1, -1, 1, 1)
    keep = [i for i in range(consumer.shape[1]) if i != m]
    return new[:, keep].to(consumer.dtype)


@dataclass
class LRFResult:
    """What :func:`lrf_prune_channels` did.

    Attributes:
        kept: (K',) the kept channels, increasing, as indices of the input.
        consumers: the compensated consumer weights, (O_j, K', kh, kw).
        removed: the removed channels, in removal order.
        residuals: ``||eps||`` of each removed filter when it was removed.
    """

    kept: Tensor
    consumers: List[Tensor]
    removed: List[int] = field(default_factory=list)
    residuals: List[float] = field(default_factory=list)


def lrf_prune_channels(weight: Tensor, consumers: Sequence[Tensor],
                       n_remove: int, scale: Optional[Tensor] = None,
                       shift: Optional[Tensor] = None,
                       consumer_scales: Optional[Sequence[Optional[Tensor]]] = None,
                       ridge: float = RIDGE) -> LRFResult:
    """Remove ``n_remove`` output channels of a conv, greedily, with compensation.

    Each step scores every remaining channel m by
    ``||eps_m|| * sqrt(sum_j ||g_j,m W'_j[:, m]||^2)`` (residual of its fit
    by the other remaining filters, :func:`replaceability`, times the norm
    of the consumer weights that read it), removes the lowest (the first on
    ties) and compensates every consumer with the removed filter's
    least-squares coefficients (:func:`combination`, :func:`compensate`).

    Args:
        weight: (K, C, kh, kw) the producer's weight.
        consumers: weights (O_j, K, kh_j, kw_j) of the convs that read its
            output.
        n_remove: channels to remove, 0 <= n_remove <= K - 1.
        scale, shift: the per-channel affine map after the conv
            (:func:`affine_filters`).
        consumer_scales: per consumer, a (K,) factor between the producer's
            channels and what it reads (SSD's L2Norm weight), or None.
        ridge: relative ridge of the fits.

    Returns:
        The :class:`LRFResult`.

    Raises:
        ValueError: ``n_remove`` out of range, or a consumer that does not
            read K channels.
    """
    k = weight.shape[0]
    if isinstance(n_remove, bool) or not isinstance(n_remove, int) or not (
            0 <= n_remove <= k - 1):
        raise ValueError(f'n_remove must be an int in 0 .. {k - 1} (one channel '
                         f'stays), got {n_remove!r}')
    for i, c in enumerate(consumers):
        if c.dim() != 4 or c.shape[1] != k:
            raise ValueError(f'consumer {i} has shape {tuple(c.shape)}; it must '
                             f'read the producer\'s {k} channels (O, {k}, kh, kw)')
    scales = [None if g is None else g.detach().double() for g in (
        consumer_scales if consumer_scales is not None else [None] * len(consumers))]
    filters = affine_filters(weight, scale, shift)
    gram = filters @ filters.t()
    kept = list(range(k))
    # float64 at full width; a removed channel's column is zeroed, and the
    # kept columns are taken at the end.
    cons = [c.detach().double().clone() for c in consumers]
    result = LRFResult(torch.arange(k), [])
    for _ in range(n_remove):
        idx = torch.tensor(kept)
        sub = gram[idx][:, idx]
        residual, _ = _replaceability(sub, ridge)
        norm_sq = torch.zeros(k, dtype=torch.float64)
        for c, g in zip(cons, scales):
            col = c.pow(2).sum(dim=(0, 2, 3))
            norm_sq += col if g is None else col * g.pow(2)
        score = residual * norm_sq[idx].sqrt()
        m = int(score.argmin())
        lam = combination(sub, m, ridge)
        removed = kept[m]
        for c, g in zip(cons, scales):
            # compensate(), in place: W'[:, i] += lambda_i (g_m / g_i) W'[:, m]
            ratio = lam if g is None else lam * g[removed] / g[idx]
            c.index_add_(1, idx, c[:, removed:removed + 1] * ratio.view(1, -1, 1, 1))
            c[:, removed] = 0
        rows = filters[idx]
        result.residuals.append(float((rows[m] - lam @ rows).norm()))
        result.removed.append(kept.pop(m))
    result.kept = torch.tensor(kept, dtype=torch.long)
    result.consumers = [c[:, result.kept].to(orig.dtype).contiguous()
                        for c, orig in zip(cons, consumers)]
    return result


# ------------------------------------------------------------------ models
@dataclass(frozen=True)
class ChannelGroup:
    """The output channels of one conv and every module they reach.

    Attributes:
        producer: name of the conv whose output channels are pruned.
        norm: name of its BatchNorm, or None.
        consumers: convs that read the channels directly (through ReLU /
            max-pooling).
        l2norm: name of an SSD ``L2Norm`` between the channels and
            ``scaled_consumers`` (its weight is pruned too), or None.
        scaled_consumers: convs that read the channels through ``l2norm``.
    """

    producer: str
    norm: Optional[str]
    consumers: Tuple[str, ...]
    l2norm: Optional[str] = None
    scaled_consumers: Tuple[str, ...] = ()


def _conv_module_names(prefix: str, module) -> Tuple[str, Optional[str]]:
    """(conv name, norm name or None) of an mmcv ConvModule."""
    norm = f'{prefix}.{module.norm_name}' if module.with_norm else None
    return f'{prefix}.conv', norm


def ssd300_channel_groups(model: nn.Module) -> List[ChannelGroup]:
    """Every prunable conv output of an SSD300, with its consumers.

    Supported: backbone :class:`~fsnet_mmdet.models.FSSSD300` (convs as
    ConvModules, BN or not) or mmdet's ``SSDVGG`` (plain convs); neck
    ``SSDNeck`` (no depthwise convs); head ``SSDHead`` / ``FSSSDHead`` with
    no stacked convs. Every conv of backbone and neck is a producer, the
    head's predictors are not (their outputs are the predictions). The six
    feature levels (conv4_3, fc7 and the neck's extra levels) are read by
    the head's class and box predictors of their level and by the next
    conv; conv4_3 reaches the head through the neck's L2Norm.

    Returns:
        The groups in network order (input to output).

    Raises:
        ValueError: an unsupported backbone, neck or head, or a layer of the
            chain that is not a dense conv (e.g. an FS model).
    """
    from mmcv.cnn import ConvModule
    from mmdet.models.backbones import SSDVGG
    from mmdet.models.dense_heads import SSDHead
    from mmdet.models.necks import SSDNeck

    from ..models import FSSSD300

    backbone, neck, head = (getattr(model, a, None)
                            for a in ('backbone', 'neck', 'bbox_head'))
    if not isinstance(neck, SSDNeck) or not isinstance(head, SSDHead):
        raise ValueError('LRF needs an SSD detector (SSDNeck and SSDHead); got '
                         f'{type(neck).__name__} and {type(head).__name__}')
    # (conv name, norm name) of the backbone chain, and its level producers.
    chain: List[Tuple[str, Optional[str]]] = []
    levels: List[int] = []
    if isinstance(backbone, FSSSD300):
        for name, module in backbone.features.named_children():
            if isinstance(module, ConvModule):
                chain.append(_conv_module_names(f'backbone.features.{name}', module))
                if name in backbone.out_feature_names:
                    levels.append(len(chain) - 1)
    elif isinstance(backbone, SSDVGG):
        for i, module in enumerate(backbone.features):
            if isinstance(module, nn.Conv2d):
                chain.append((f'backbone.features.{i}', None))
            if i in backbone.out_feature_indices:
                levels.append(len(chain) - 1)
    else:
        raise ValueError(f'LRF supports the FSSSD300 and SSDVGG backbones, got '
                         f'{type(backbone).__name__}')
    extra = []  # per neck level: (1x1 conv, norm), (3x3 conv, norm)
    for i, level in enumerate(neck.extra_layers):
        if len(level) != 2 or not all(isinstance(m, ConvModule) for m in level):
            raise ValueError(f'LRF needs SSDNeck levels of two ConvModules '
                             f'(use_depthwise=False); level {i} is {level}')
        extra.append([_conv_module_names(f'neck.extra_layers.{i}.{j}', m)
                      for j, m in enumerate(level)])
    preds = []
    for i, (cls, reg) in enumerate(zip(head.cls_convs, head.reg_convs)):
        if len(cls) != 1 or len(reg) != 1:
            raise ValueError('LRF needs an SSDHead without stacked convs '
                             '(stacked_convs=0)')
        preds.append((f'bbox_head.cls_convs.{i}.0', f'bbox_head.reg_convs.{i}.0'))
    if len(levels) + len(extra) != len(preds) or len(levels) != 2:
        raise ValueError(f'LRF needs 2 backbone levels + {len(extra)} neck '
                         f'levels = {len(preds)} head levels')

    l2norm = 'neck.l2_norm' if hasattr(neck, 'l2_norm') else None
    groups = []
    for j, (conv, norm) in enumerate(chain):
        nxt = [chain[j + 1][0]] if j + 1 < len(chain) else []
        if j == levels[0]:
            scaled = preds[0] if l2norm else ()
            direct = nxt + ([] if l2norm else list(preds[0]))
            groups.append(ChannelGroup(conv, norm, tuple(direct), l2norm,
                                       tuple(scaled)))
            continue
        if j == levels[1]:
            nxt = [extra[0][0][0]] if extra else []
            groups.append(ChannelGroup(conv, norm, tuple(nxt + list(preds[1]))))
            continue
        if j > levels[1]:
            raise ValueError(f'{conv} comes after the last backbone level '
                             f'and feeds nothing the neck reads')
        groups.append(ChannelGroup(conv, norm, tuple(nxt)))
    for i, ((c1, n1), (c2, n2)) in enumerate(extra):
        groups.append(ChannelGroup(c1, n1, (c2, )))
        nxt = [extra[i + 1][0][0]] if i + 1 < len(extra) else []
        groups.append(ChannelGroup(c2, n2, tuple(nxt + list(preds[2 + i]))))
    for group in groups:
        for name in (group.producer, *group.consumers, *group.scaled_consumers):
            _dense_conv(model, name)
    return groups


def _dense_conv(model: nn.Module, name: str) -> nn.Conv2d:
    from mmcv.cnn.bricks import wrappers
    conv = model.get_submodule(name)
    if type(conv) not in (nn.Conv2d, wrappers.Conv2d) or conv.groups != 1:
        raise ValueError(f'LRF prunes dense convs; {name} is a '
                         f'{type(conv).__name__}'
                         + (f' with groups={conv.groups}'
                            if isinstance(conv, nn.Conv2d) else ''))
    return conv


def removal_counts(model: nn.Module, groups: Sequence[ChannelGroup],
                   ratio: float) -> Dict[str, int]:
    """Channels to remove per producer at a uniform ratio p (the authors'
    rule): ``floor(p K + 1/2)``, at most K - 1."""
    if not (isinstance(ratio, (int, float)) and 0 <= ratio < 1):
        raise ValueError(f'ratio must be a number in [0, 1), got {ratio!r}')
    counts = {}
    for g in groups:
        k = model.get_submodule(g.producer).out_channels
        counts[g.producer] = min(k - 1, int(math.floor(ratio * k + 0.5)))
    return counts


def lrf_structure(model: nn.Module, groups: Sequence[ChannelGroup],
                  removals: Mapping[str, int]) -> Dict[str, dict]:
    """The new sizes (a ``compression`` ``'lrf'`` layers dict) after removing
    ``removals[producer]`` channels of each group."""
    spec: Dict[str, dict] = {}
    for g in groups:
        n = removals.get(g.producer, 0)
        if not n:
            continue
        k = model.get_submodule(g.producer).out_channels - n
        spec.setdefault(g.producer, {})['out_channels'] = k
        if g.norm:
            spec[g.norm] = dict(num_features=k)
        if g.l2norm:
            spec[g.l2norm] = dict(n_dims=k)
        for c in (*g.consumers, *g.scaled_consumers):
            spec.setdefault(c, {})['in_channels'] = k
    return spec


def ratio_for_target(model: nn.Module, groups: Sequence[ChannelGroup],
                     target: float) -> Tuple[float, int]:
    """The smallest uniform ratio (to 1e-4) whose pruned model has at most
    ``target`` parameters; ``(ratio, parameters)``.

    Raises:
        ValueError: the target is below the count with every group at one
            channel.
    """
    from .structure import resized_params

    def params(p: float) -> int:
        return resized_params(model, lrf_structure(
            model, groups, removal_counts(model, groups, p)))

    if params(0.0) <= target:
        return 0.0, params(0.0)
    lowest = resized_params(model, lrf_structure(model, groups, {
        g.producer: model.get_submodule(g.producer).out_channels - 1
        for g in groups}))
    if lowest > target:
        raise ValueError(f'target {target:,.0f} parameters is below what LRF '
                         f'reaches with one channel per pruned layer '
                         f'({lowest:,})')
    lo, hi = 0.0, 1.0 - 1e-9
    while hi - lo > 1e-4:
        mid = (lo + hi) / 2
        if params(mid) <= target:
            hi = mid
        else:
            lo = mid
    return hi, params(hi)


def _affine_after(state: Mapping[str, Tensor], conv: str, norm: Optional[str],
                  eps: float) -> Tuple[Optional[Tensor], Optional[Tensor]]:
    """(scale, shift) of BN(conv(x) + bias) in eval mode (module docstring)."""
    bias = state.get(f'{conv}.bias')
    if norm is None:
        return None, bias
    k = state[f'{conv}.weight'].shape[0]
    gamma = state.get(f'{norm}.weight', torch.ones(k)).double()
    beta = state.get(f'{norm}.bias', torch.zeros(k)).double()
    mean = state.get(f'{norm}.running_mean', torch.zeros(k)).double()
    var = state.get(f'{norm}.running_var', torch.ones(k)).double()
    scale = gamma / torch.sqrt(var + eps)
    b = bias.double() if bias is not None else torch.zeros(k, dtype=torch.float64)
    return scale, beta + scale * (b - mean)


@dataclass(frozen=True)
class GroupReport:
    """One pruned group: name, channels before and after, mean residual of
    the removed filters relative to the mean filter norm."""

    producer: str
    before: int
    after: int
    relative_residual: float


def prune_model_lrf(model: nn.Module, groups: Sequence[ChannelGroup],
                    removals: Mapping[str, int]
                    ) -> Tuple[Dict[str, dict], Dict[str, Tensor], List[GroupReport]]:
    """LRF on a whole model, from its current (trained) weights.

    Groups are pruned from the last to the first (as the authors: from the
    top of the network down), each with :func:`lrf_prune_channels` on the
    current state: a consumer compensated earlier is the producer of a later
    step with its new input weights.

    Args:
        model: the dense model (not modified).
        groups: from :func:`ssd300_channel_groups`.
        removals: channels to remove per producer (:func:`removal_counts`).

    Returns:
        ``(layers, state_dict, report)``: the ``compression`` layers dict,
        the pruned model's state dict (load it after
        :func:`~fsnet_mmdet.compression.structure.apply_compression`) and a
        :class:`GroupReport` per pruned group.
    """
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    report = []
    for g in reversed(groups):
        n = removals.get(g.producer, 0)
        if not n:
            continue
        eps = model.get_submodule(g.norm).eps if g.norm else 0.0
        scale, shift = _affine_after(state, g.producer, g.norm, eps)
        names = [*g.consumers, *g.scaled_consumers]
        g_scale = state[f'{g.l2norm}.weight'] if g.l2norm else None
        result = lrf_prune_channels(
            state[f'{g.producer}.weight'], [state[f'{c}.weight'] for c in names],
            n, scale, shift,
            [None] * len(g.consumers) + [g_scale] * len(g.scaled_consumers))
        kept = result.kept
        w = state[f'{g.producer}.weight']
        norms = affine_filters(w, scale, shift).norm(dim=1)
        report.append(GroupReport(
            g.producer, w.shape[0], len(kept),
            float(torch.tensor(result.residuals).mean() / norms.mean())))
        state[f'{g.producer}.weight'] = w[kept].clone()
        if f'{g.producer}.bias' in state:
            state[f'{g.producer}.bias'] = state[f'{g.producer}.bias'][kept].clone()
        for key in ('weight', 'bias', 'running_mean', 'running_var'):
            if g.norm and f'{g.norm}.{key}' in state:
                state[f'{g.norm}.{key}'] = state[f'{g.norm}.{key}'][kept].clone()
        if g.l2norm:
            state[f'{g.l2norm}.weight'] = g_scale[kept].clone()
        for c, new in zip(names, result.consumers):
            state[f'{c}.weight'] = new.contiguous()
    report.reverse()
    return lrf_structure(model, groups, removals), state, report
