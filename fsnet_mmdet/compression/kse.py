"""KSE: kernel sparsity and entropy, kernel clustering, and the KSEConv layer.

Li et al., "Exploiting Kernel Sparsity and Entropy for Interpretable CNN
Compression", CVPR 2019 (authors' code: yuchaoli/KSE, ``utils_kse/utils.py``).
Data-free, from a trained conv weight W of shape (N, C, kh, kw):

1. Per input channel c, its N 2D kernels ``W[:, c]``:
   kernel sparsity ``KS_c = sum_n ||W[n, c]||_1`` (:func:`kernel_sparsity`)
   and kernel entropy ``KE_c`` (:func:`kernel_entropy`): the density of
   kernel n is the sum of its Euclidean distances to its ``k = 5`` nearest
   kernels of the same channel, ``d_n``; ``KE_c = -sum_n p_n log2 p_n`` with
   ``p_n = d_n / sum_m d_m``.
2. Indicator (:func:`kse_indicator`): KS and KE min-max normalized over the
   channels of the layer, ``v_c = sqrt(KS_c / (1 + KE_c))``, min-max
   normalized again, so ``v`` is in [0, 1].
3. Groups (:func:`kse_groups`): ``g_c = min(floor(G v_c), G - 1)``.
4. Centroids per channel (:func:`centroid_counts`), with N output filters:
   ``q_c = 0`` (the channel is dropped) in group 0, ``q_c = N`` (kept whole)
   in group G - 1, and ``q_c = ceil(N / 2 ** (G - 1 - g_c + T))`` in between
   (the paper's ``ceil(N / 2^(G - ceil(G v_c) + T))``; both agree off the
   group boundaries, and this form is the authors' code).
5. Per kept channel, k-means of its N kernels into ``q_c`` centroids
   (:func:`kmeans`); each kernel is replaced by its centroid, the layer stores
   the centroids and, per kernel, the index of its centroid
   (``ceil(log2 q_c)`` bits; a channel kept whole needs none). Fine-tuning
   then trains the centroids with the indices fixed.

:class:`KSEConv` is that layer: an ``nn.Conv2d`` whose weight is the
centroids gathered by the index, convolving only the kept input channels.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from mmengine.registry import MODELS
from torch import Tensor, nn

from ..layers.accounting import Storage, StoredLayer, tensor_storage
from ..utils.modules import replace_module

#: Neighbours of the kNN density (the authors' code: 5).
KNN = 5
#: k-means restarts per channel (k-means++ seeds); the lowest inertia wins.
KMEANS_INITS = 3
#: Lloyd iterations at most per restart.
KMEANS_ITERS = 100
#: Largest (channels, kernels, kernels) distance array the entropy computes at once.
_CHUNK_ELEMENTS = 1 << 22


# ---------------------------------------------------------------- indicator
def kernel_sparsity(weight: Tensor) -> Tensor:
    """KS: per input channel, the sum of the L1 norms of its 2D kernels.

    Args:
        weight: (N, C, kh, kw) conv weight.

    Returns:
        (C,) float64: ``KS_c = sum_n sum_ij |W[n, c, i, j]|``.
    """
    return weight.detach().double().abs().sum(dim=(0, 2, 3))


def kernel_entropy(weight: Tensor, neighbours: int = KNN) -> Tensor:
    """KE: per input channel, the entropy of the kNN densities of its kernels.

    The density of kernel n of channel c is ``d_n = sum`` of the Euclidean
    distances from ``W[n, c]`` to its ``k`` nearest other kernels
    ``W[m, c]`` (m != n; ``k = min(neighbours, N - 1)``); the entropy is
    ``-sum_n p_n log2 p_n`` with ``p_n = d_n / sum_m d_m`` (0 when every
    kernel of the channel is the same, and with a single output filter).

    Args:
        weight: (N, C, kh, kw) conv weight.
        neighbours: k of the kNN density.

    Returns:
        (C,) float64 entropies, in [0, log2 N].
    """
    n, c = weight.shape[:2]
    k = min(neighbours, n - 1)
    if k < 1:
        return torch.zeros(c, dtype=torch.float64)
    kernels = weight.detach().double().transpose(0, 1).reshape(c, n, -1)
    out = []
    step = max(1, _CHUNK_ELEMENTS // (n * n))
    for start in range(0, c, step):
        x = kernels[start:start + step]
        dist = torch.cdist(x, x, compute_mode='donot_use_mm_for_euclid_dist')
        dist.diagonal(dim1=1, dim2=2).fill_(math.inf)
        density = dist.topk(k, dim=2, largest=False).values.sum(2)  # (B, N)
        total = density.sum(1, keepdim=True)
        p = density / total.clamp(min=torch.finfo(torch.float64).tiny)
        terms = torch.where(p > 0, -p * torch.log2(p.clamp(min=1e-300)),
                            torch.zeros_like(p))
        out.append(torch.where(total[:, 0] > 0, terms.sum(1),
                               torch.zeros_like(total[:, 0])))
    return torch.cat(out)


def normalize01(values: Tensor) -> Tensor:
    """``(x - min) / (max - min)``; all ones when the values are all equal
    (a layer whose channels the indicator cannot tell apart keeps them all)."""
    lo, hi = values.min(), values.max()
    if not hi > lo:
        return torch.ones_like(values)
    return (values - lo) / (hi - lo)


def kse_indicator(weight: Tensor, neighbours: int = KNN) -> Tensor:
    """The KSE indicator of every input channel of a conv weight.

    Args:
        weight: (N, C, kh, kw) conv weight.
        neighbours: k of the kNN density (:func:`kernel_entropy`).

    Returns:
        (C,) float64 in [0, 1]: ``normalize01(sqrt(KS' / (1 + KE')))`` with
        ``KS' = normalize01(KS)``, ``KE' = normalize01(KE)``.
    """
    ks = normalize01(kernel_sparsity(weight))
    ke = normalize01(kernel_entropy(weight, neighbours))
    return normalize01(torch.sqrt(ks / (1 + ke)))


def kse_groups(indicator: Tensor, groups: int) -> Tensor:
    """Group of every channel: ``min(floor(G v), G - 1)``, in 0 .. G-1.

    Raises:
        ValueError: ``groups`` is not an int >= 2.
    """
    _check_groups(groups)
    return torch.clamp(torch.floor(indicator * groups), max=groups - 1).long()


def centroid_counts(group: Tensor, groups: int, t: float,
                    out_channels: int) -> Tensor:
    """Centroids q of every input channel from its group (module docstring, 4).

    Args:
        group: (C,) groups from :func:`kse_groups`.
        groups: G.
        t: T >= 0; larger T, fewer centroids in the middle groups.
        out_channels: N, the number of 2D kernels per input channel.

    Returns:
        (C,) long: 0 for group 0, N for group G - 1, else
        ``ceil(N / 2 ** (G - 1 - g + T))`` (at least 1).
    """
    _check_groups(groups)
    if not (isinstance(t, (int, float)) and math.isfinite(t) and t >= 0):
        raise ValueError(f'T must be a finite number >= 0, got {t!r}')
    exponent = (groups - 1 - group).double() + t
    middle = torch.ceil(out_channels / torch.pow(2.0, exponent)).long()
    q = torch.where(group == 0, torch.zeros_like(middle), middle)
    return torch.where(group == groups - 1, torch.full_like(middle, out_channels),
                       q).clamp(max=out_channels)


def _check_groups(groups) -> None:
    if isinstance(groups, bool) or not isinstance(groups, int) or groups < 2:
        raise ValueError(f'G (groups) must be an int >= 2, got {groups!r}')


def index_bits(q: int, out_channels: int) -> int:
    """Bits of a channel's centroid index: ``N * ceil(log2 q)`` for
    ``0 < q < N``; 0 for a dropped channel and for one kept whole."""
    if q <= 0 or q >= out_channels:
        return 0
    return out_channels * math.ceil(math.log2(q)) if q > 1 else 0


# ------------------------------------------------------------------ k-means
def _sq_dist(points: Tensor, centroids: Tensor) -> Tensor:
    """(B, P, D), (B, Q, D) -> (B, P, Q) squared Euclidean distances
    (``|x|^2 + |c|^2 - 2 x.c``, float64 in k-means)."""
    sq = points.pow(2).sum(-1)[..., None] + centroids.pow(2).sum(-1)[:, None, :]
    return torch.baddbmm(sq, points, centroids.transpose(1, 2),
                         alpha=-2).clamp_(min=0)


def _kmeans_pp(points: Tensor, q: int, generator: torch.Generator) -> Tensor:
    """k-means++ seeds: the first centroid uniform, each next one a point
    drawn with probability proportional to its squared distance to the
    nearest centroid so far (uniform when every point is on a centroid)."""
    b, p, _ = points.shape
    rows = torch.arange(b)
    first = torch.randint(p, (b,), generator=generator)
    centroids = [points[rows, first]]
    nearest = (points - centroids[0][:, None]).pow(2).sum(2)
    for _ in range(1, q):
        total = nearest.sum(1, keepdim=True)
        weights = torch.where(total > 0, nearest, torch.ones_like(nearest))
        pick = torch.multinomial(weights, 1, generator=generator)[:, 0]
        centroids.append(points[rows, pick])
        nearest = torch.minimum(nearest,
                                (points - centroids[-1][:, None]).pow(2).sum(2))
    return torch.stack(centroids, 1)


def _lloyd(points: Tensor, centroids: Tensor,
           max_iter: int) -> Tuple[Tensor, Tensor]:
    """Lloyd's iterations from ``centroids``; returns (centroids, labels).

    Every point goes to its nearest centroid (the lowest index on ties);
    every centroid moves to the mean of its points; a centroid left without
    points moves onto the point farthest from the centroid it had. Stops
    when the labels no longer change (then the centroids are the means of
    their points and every point is at its nearest centroid) or after
    ``max_iter``.
    """
    b, p, d = points.shape
    q = centroids.shape[1]
    dist = _sq_dist(points, centroids)
    labels = dist.argmin(2)
    ones = torch.ones(b, p, dtype=points.dtype)
    for _ in range(max_iter):
        sums = torch.zeros(b, q, d, dtype=points.dtype).scatter_add_(
            1, labels[..., None].expand(-1, -1, d), points)
        counts = torch.zeros(b, q, dtype=points.dtype).scatter_add_(
            1, labels, ones)
        centroids = torch.where(counts[..., None] > 0,
                                sums / counts.clamp(min=1)[..., None], centroids)
        empty = (counts == 0).nonzero().tolist()
        if empty:
            own = dist.gather(2, labels[..., None])[..., 0]
            for i, j in empty:
                far = int(own[i].argmax())
                centroids[i, j] = points[i, far]
                own[i, far] = -1.0
        dist = _sq_dist(points, centroids)
        new_labels = dist.argmin(2)
        if not empty and torch.equal(new_labels, labels):
            break
        labels = new_labels
    return centroids, labels


def kmeans(points: Tensor, q: int, seed: int = 0, inits: int = KMEANS_INITS,
           max_iter: int = KMEANS_ITERS) -> Tuple[Tensor, Tensor]:
    """Deterministic batched k-means (k-means++ seeds, Lloyd iterations).

    Args:
        points: (B, P, D) B independent sets of P points.
        q: clusters per set, 1 <= q <= P.
        seed: seed of the k-means++ draws (same seed, same result).
        inits: restarts; per set, the one with the lowest inertia (sum of
            squared distances to the assigned centroids) is kept (the first
            on ties).
        max_iter: Lloyd iterations at most per restart.

    Returns:
        ``(centroids, labels)``: (B, q, D) in ``points``' dtype and (B, P)
        long.

    Raises:
        ValueError: q outside [1, P].
    """
    b, p, d = points.shape
    if not 1 <= q <= p:
        raise ValueError(f'k-means needs 1 <= q <= {p} points, got q={q}')
    inits = max(1, inits)
    # The restarts run side by side: restart r of set i is row r * B + i.
    x = points.detach().double().repeat(inits, 1, 1)
    generator = torch.Generator().manual_seed(int(seed))
    centroids, labels = _lloyd(x, _kmeans_pp(x, q, generator), max_iter)
    inertia = _sq_dist(x, centroids).gather(2, labels[..., None])[..., 0].sum(1)
    best = inertia.view(inits, b).argmin(0)  # the first restart on ties
    rows = best * b + torch.arange(b)
    return centroids[rows].to(points.dtype), labels[rows]


# ------------------------------------------------------------- index packing
def pack_varwidth(values: Tensor, widths: Tensor) -> Tensor:
    """Pack non-negative ints into a byte string, ``widths[i]`` bits each.

    Layout: the values one after the other, each least significant bit
    first; bit ``j`` of the stream is bit ``j % 8`` of byte ``j // 8``.

    Args:
        values: (M,) ints, ``0 <= values[i] < 2 ** widths[i]``.
        widths: (M,) bit widths >= 0.

    Returns:
        (ceil(sum(widths) / 8),) uint8.
    """
    values, widths = values.long().reshape(-1), widths.long().reshape(-1)
    total = int(widths.sum())
    if total == 0:
        return torch.zeros(0, dtype=torch.uint8)
    which = torch.repeat_interleave(torch.arange(len(widths)), widths)
    starts = torch.cumsum(widths, 0) - widths
    bit = torch.arange(total) - starts[which]
    bits = (values[which] >> bit) & 1
    bits = F.pad(bits, (0, -total % 8)).view(-1, 8)
    return (bits << torch.arange(8)).sum(1).to(torch.uint8)


def unpack_varwidth(packed: Tensor, widths: Tensor) -> Tensor:
    """Inverse of :func:`pack_varwidth`: (M,) long values."""
    widths = widths.long().reshape(-1).to(packed.device)
    total = int(widths.sum())
    out = torch.zeros(len(widths), dtype=torch.long, device=packed.device)
    if total == 0:
        return out
    bits = ((packed.long()[:, None] >> torch.arange(8, device=packed.device))
            & 1).reshape(-1)[:total]
    which = torch.repeat_interleave(
        torch.arange(len(widths), device=packed.device), widths)
    starts = torch.cumsum(widths, 0) - widths
    bit = torch.arange(total, device=packed.device) - starts[which]
    return out.index_add_(0, which, bits << bit)


# ------------------------------------------------------------------- counts
@dataclass(frozen=True)
class KSEParams:
    """What a KSE layer stores.

    Attributes:
        centroids: centroid elements (``sum_c q_c kh kw``; a channel kept
            whole counts its N kernels).
        bias: bias elements.
        index_bits: bits of the centroid indices (:func:`index_bits`).
    """

    centroids: int
    bias: int
    index_bits: int

    @property
    def effective(self) -> float:
        """fp32-equivalent parameters: centroids + bias + index bits / 32."""
        return self.centroids + self.bias + self.index_bits / 32


def kse_params(q: Sequence[int], out_channels: int, kernel_area: int,
               bias: bool) -> KSEParams:
    """Parameters of a KSE layer with centroid counts ``q`` (one per input channel)."""
    return KSEParams(sum(int(v) for v in q) * kernel_area,
                     out_channels if bias else 0,
                     sum(index_bits(int(v), out_channels) for v in q))


def kse_flops(q: Sequence[int], out_channels: int, kernel_area: int,
              out_pixels: int, shared: bool = False) -> int:
    """Multiply-accumulates of a KSE layer on one image.

    ``shared=False`` (what :class:`KSEConv` runs and ``mmengine.analysis``
    counts, the rule used throughout): the dense conv over the kept input
    channels, ``N * C_kept * kh kw * H'W'``. ``shared=True``: the paper's
    centroid-sharing count, each kept channel convolved once with each of
    its centroids, then the N output maps summed from those:
    ``sum_c q_c kh kw H'W' + N C_kept H'W'``.
    """
    kept = sum(1 for v in q if v > 0)
    if shared:
        return (sum(int(v) for v in q) * kernel_area * out_pixels
                + out_channels * kept * out_pixels)
    return out_channels * kept * kernel_area * out_pixels


def shared_flops_saving(model: nn.Module,
                        image_size: Tuple[int, int] = (300, 300)) -> int:
    """FLOPs the paper's centroid-sharing count saves over the plain count,
    summed over the model's KSE layers, for one (1, 3, H, W) image
    (:func:`kse_flops` ``shared=False`` minus ``shared=True``; the output
    sizes from one forward pass)."""
    pixels = {}
    hooks = [m.register_forward_hook(
        lambda mod, _, out: pixels.__setitem__(mod, out.shape[-2] * out.shape[-1]))
        for m in model.modules() if isinstance(m, KSEConv)]
    was_training = model.training
    model.eval()
    first = next(iter(model.parameters()))
    try:
        with torch.no_grad():
            model(torch.zeros(1, 3, *image_size, device=first.device,
                              dtype=first.dtype))
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    saving = 0
    for m, hw in pixels.items():
        area = math.prod(m.kernel_size)
        saving += (kse_flops(m.q, m.out_channels, area, hw)
                   - kse_flops(m.q, m.out_channels, area, hw, shared=True))
    return saving


# -------------------------------------------------------------------- layer
@MODELS.register_module('KSEConv')
class KSEConv(StoredLayer, nn.Conv2d):
    """Conv2d whose 2D kernels are shared centroids, per input channel (KSE).

    Input channel c keeps ``q[c]`` centroid kernels (0: the channel is not
    read at all; ``out_channels``: every kernel its own); kernel ``W[n, c]``
    is centroid ``index[n, c]`` of channel c. The layer stores

    * ``centroids``: (sum q, kh, kw) parameter, the kept channels' centroids
      one channel after the other (channels in increasing order);
    * ``index``: uint8 buffer, the centroid index of every kernel of every
      channel with ``0 < q < out_channels``, packed with
      ``ceil(log2 q)`` bits each (:func:`pack_varwidth`; channel by channel,
      kernels n = 0 .. N-1 within a channel); channels kept whole need none.

    Forward: ``conv2d(x[:, kept], centroids[gather])``, so only the kept
    channels are convolved. Gradients reach the centroids (summed over the
    kernels that share one); the index is fixed.

    The signature is ``nn.Conv2d``'s with ``q`` last (keyword, required);
    ``groups`` must be 1. Built layers hold ``nn.Conv2d``'s default init in
    their centroids and a zero index: they are meant to be loaded from a
    checkpoint of ``tools/compress.py --method kse``. ``weight`` is a
    detached dense (N, C, kh, kw) view, zero on dropped channels; writes to
    it (initializers) do not reach the centroids.
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
                 q: Sequence[int]) -> None:
        if groups != 1:
            raise ValueError(f'KSEConv supports groups=1 only, got groups={groups}')
        super().__init__(in_channels, out_channels, kernel_size, stride,
                         padding, dilation, groups, bias, padding_mode,
                         device='meta', dtype=dtype)
        del self._parameters['weight']
        try:
            q = None if isinstance(q, (str, bytes)) else [int(v) for v in q]
        except (TypeError, ValueError):
            q = None
        if q is None or len(q) != in_channels or not all(
                0 <= v <= out_channels for v in q) or not any(q):
            raise ValueError(
                f'q must list, per input channel ({in_channels}), its number '
                f'of centroids in 0 .. out_channels ({out_channels}), at least '
                f'one > 0; got {q!r}')
        self.q = tuple(q)
        kept = [c for c, v in enumerate(q) if v > 0]
        kept_q = torch.tensor([q[c] for c in kept])
        clustered = [j for j, c in enumerate(kept) if q[c] < out_channels]
        widths = [math.ceil(math.log2(q[kept[j]])) for j in clustered]
        factory = dict(device=device, dtype=dtype)
        self.centroids = nn.Parameter(torch.empty(
            int(kept_q.sum()), *self.kernel_size, **factory))
        if bias:
            self.bias = nn.Parameter(torch.empty(out_channels, **factory))
        # Derived from q: never in a checkpoint.
        self.register_buffer('channels', torch.tensor(kept, device=device),
                             persistent=False)
        # Row of each kept channel's first centroid.
        self.register_buffer('first_rows', (torch.cumsum(kept_q, 0) - kept_q).to(
            device), persistent=False)
        self.register_buffer('clustered', torch.tensor(clustered, dtype=torch.long,
                                                       device=device),
                             persistent=False)
        self.register_buffer('label_widths', torch.tensor(
            widths, dtype=torch.long, device=device).repeat_interleave(
                out_channels), persistent=False)
        self.register_buffer('index', torch.zeros(
            -(-int(self.label_widths.sum()) // 8), dtype=torch.uint8,
            device=device))
        self._gather_cache: Optional[Tensor] = None
        self.reset_parameters()

    # ------------------------------------------------------------ weights
    def reset_parameters(self) -> None:
        """``nn.Conv2d``'s default init over the kept channels' fan-in."""
        if 'centroids' not in self._parameters:
            return  # called from nn.Conv2d.__init__, before the centroids
        fan_in = len(self.channels) * math.prod(self.kernel_size)
        bound = 1 / math.sqrt(fan_in)
        with torch.no_grad():
            # kaiming_uniform_(a=sqrt(5)) of nn.Conv2d: U(-1/sqrt(fan_in), ..)
            self.centroids.uniform_(-bound, bound)
            if self.bias is not None:
                self.bias.uniform_(-bound, bound)

    def labels(self) -> Tensor:
        """(N, C_kept) long: per kernel, its centroid within its channel."""
        n, kept = self.out_channels, len(self.channels)
        labels = torch.arange(n, device=self.index.device)[:, None].repeat(1, kept)
        if len(self.clustered):
            values = unpack_varwidth(self.index, self.label_widths).view(-1, n).t()
            limit = torch.tensor(self.q, device=values.device)[
                self.channels[self.clustered]]
            if (values >= limit).any():
                raise ValueError(f'KSEConv index holds a centroid index >= q '
                                 f'(the checkpoint does not fit q={self.q})')
            labels[:, self.clustered] = values
        return labels

    def set_labels(self, labels: Tensor) -> None:
        """Store (N, C_kept) centroid indices (those of channels kept whole
        are ignored: they are the identity)."""
        n = self.out_channels
        if tuple(labels.shape) != (n, len(self.channels)):
            raise ValueError(f'labels must have shape (out_channels, kept '
                             f'channels) = {(n, len(self.channels))}, got '
                             f'{tuple(labels.shape)}')
        values = labels[:, self.clustered.cpu()].t().reshape(-1).cpu()
        packed = pack_varwidth(values, self.label_widths.cpu())
        self.index.copy_(packed.to(self.index.device))
        self._gather_cache = None

    def gather_index(self) -> Tensor:
        """(N, C_kept) long rows of ``centroids`` for every kept kernel."""
        cache = self._gather_cache
        if cache is None or cache.device != self.index.device:
            cache = self.first_rows[None, :] + self.labels()
            self._gather_cache = cache
        return cache

    def kept_weight(self) -> Tensor:
        """(N, C_kept, kh, kw) weight over the kept channels, differentiable
        with respect to the centroids."""
        return self.centroids[self.gather_index()]

    @property
    def weight(self) -> Tensor:
        """(N, C, kh, kw) dense weight, detached; zero on dropped channels."""
        if 'centroids' not in self._parameters:
            raise AttributeError('weight')  # nn.Conv2d.__init__ registering it
        with torch.no_grad():
            kept = self.kept_weight()
            dense = kept.new_zeros(self.out_channels, self.in_channels,
                                   *self.kernel_size)
            dense[:, self.channels] = kept
        return dense

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, H, W) -> (B, N, H', W'): conv over the kept channels."""
        if len(self.channels) < self.in_channels:
            x = x.index_select(1, self.channels)
        return self._conv_forward(x, self.kept_weight(), self.bias)

    # -------------------------------------------------------------- misc
    def storage(self) -> Storage:
        """Its parameters (centroids, bias) as float, and the centroid
        index bits of :meth:`params`."""
        own = tensor_storage(self.parameters(recurse=False))
        return Storage(own.params, own.bits + self.params().index_bits)

    def params(self) -> KSEParams:
        """What the layer stores (:class:`KSEParams`)."""
        return kse_params(self.q, self.out_channels, math.prod(self.kernel_size),
                          self.bias is not None)

    def _load_from_state_dict(self, *args, **kwargs):
        super()._load_from_state_dict(*args, **kwargs)
        self._gather_cache = None

    def _apply(self, fn, recurse=True):
        self._gather_cache = None
        return super()._apply(fn, recurse)

    def extra_repr(self) -> str:
        kept = len(self.channels)
        p = self.params()
        return (f'{super().extra_repr()}, kept channels={kept}/'
                f'{self.in_channels}, centroids={tuple(self.centroids.shape)}, '
                f'index bits={p.index_bits}')


def kse_from_conv2d(conv: nn.Conv2d, q: Sequence[int], seed: int = 0,
                    inits: int = KMEANS_INITS) -> KSEConv:
    """A :class:`KSEConv` from a trained conv: per kept channel, k-means of
    its kernels into ``q[c]`` centroids; channels kept whole copy their kernels.

    Channels with the same q are clustered in one batch, seeded with
    ``seed + q``: the result depends only on the weight, q and the seed.

    Args:
        conv: a dense ``nn.Conv2d`` with ``groups=1``.
        q: (C,) centroids per input channel (:func:`centroid_counts`).
        seed: k-means seed.
        inits: k-means restarts.
    """
    weight = conv.weight.detach()
    layer = KSEConv(conv.in_channels, conv.out_channels, conv.kernel_size,
                    conv.stride, conv.padding, conv.dilation, conv.groups,
                    conv.bias is not None, conv.padding_mode,
                    device=weight.device, dtype=weight.dtype, q=q)
    n = conv.out_channels
    kept = layer.channels.tolist()
    kernels = weight.transpose(0, 1).reshape(conv.in_channels, n, -1)
    rows: Dict[int, Tensor] = {}
    labels = torch.empty(n, len(kept), dtype=torch.long)
    by_q: Dict[int, List[int]] = {}
    for j, c in enumerate(kept):
        if layer.q[c] == n:
            rows[j] = kernels[c]
            labels[:, j] = torch.arange(n)
        else:
            by_q.setdefault(layer.q[c], []).append(j)
    for qc, positions in sorted(by_q.items()):
        points = kernels[[kept[j] for j in positions]]
        centroids, lab = kmeans(points, qc, seed=seed + qc, inits=inits)
        for i, j in enumerate(positions):
            rows[j] = centroids[i]
            labels[:, j] = lab[i]
    with torch.no_grad():
        layer.centroids.copy_(torch.cat([rows[j] for j in range(len(kept))])
                              .view_as(layer.centroids))
        if conv.bias is not None:
            layer.bias.copy_(conv.bias.detach())
    layer.set_labels(labels)
    layer.train(conv.training)
    return layer


# ------------------------------------------------------------ whole models
@dataclass(frozen=True)
class KSELayer:
    """A conv that KSE compresses, with its indicator (settings-independent).

    Attributes:
        name: module name.
        out_channels: N.
        kernel_area: kh * kw.
        indicator: (C,) :func:`kse_indicator` of its weight.
    """

    name: str
    out_channels: int
    kernel_area: int
    indicator: Tensor

    def q(self, groups: int, t: float) -> Tensor:
        """(C,) centroids per input channel at (G, T)."""
        return centroid_counts(kse_groups(self.indicator, groups), groups, t,
                               self.out_channels)

    def stored(self, groups: int, t: float) -> Tuple[int, int]:
        """(centroid elements, index bits) at (G, T)."""
        q = self.q(groups, t)
        p = kse_params(q.tolist(), self.out_channels, self.kernel_area, False)
        return p.centroids, p.index_bits


def kse_layer_names(model: nn.Module) -> List[str]:
    """The convs KSE compresses: every dense conv with ``groups=1`` except
    the first one of the model (it reads the image: dropping one of its 3
    colour channels is not what KSE is for)."""
    from mmcv.cnn.bricks import wrappers
    convs = [n for n, m in model.named_modules()
             if type(m) in (nn.Conv2d, wrappers.Conv2d) and m.groups == 1]
    return convs[1:]


def kse_layers(model: nn.Module, names: Sequence[str],
               neighbours: int = KNN) -> List[KSELayer]:
    """The indicators of the named convs (:class:`KSELayer`)."""
    layers = []
    for name in names:
        conv = model.get_submodule(name)
        layers.append(KSELayer(name, conv.out_channels,
                               math.prod(conv.kernel_size),
                               kse_indicator(conv.weight, neighbours)))
    return layers


#: Largest G the target search tries; T goes up to where every middle
#: group keeps one centroid.
MAX_GROUPS = 32


def kse_effective_params(layers: Sequence[KSELayer], others: float,
                         groups: int, t: float) -> float:
    """fp32-equivalent parameters of a model with ``layers`` at (G, T):
    ``others`` (every parameter outside their weights, biases included) +
    centroids + index bits / 32."""
    centroids = bits = 0
    for layer in layers:
        c, b = layer.stored(groups, t)
        centroids, bits = centroids + c, bits + b
    return others + centroids + bits / 32


def kse_setting_for_target(layers: Sequence[KSELayer], others: float,
                           target: float, groups: int = 4
                           ) -> Tuple[int, float, float]:
    """(G, T) that brings the model to about ``target`` effective parameters.

    The rule: G starts at ``groups`` (the authors' default 4) and grows by
    one while even the largest T (every middle group at one centroid)
    leaves the model above the target (up to :data:`MAX_GROUPS`); at that G,
    T is the smallest value >= 0 (to 1e-3) whose count is <= the target
    (T = 0 when the least compression already fits).

    Returns:
        ``(G, T, effective parameters at (G, T))``.

    Raises:
        ValueError: no G up to MAX_GROUPS reaches the target (names the
            smallest count reachable).
    """
    _check_groups(groups)
    largest_n = max(layer.out_channels for layer in layers)
    t_max = math.ceil(math.log2(largest_n)) + 1.0
    smallest = None
    for g in range(groups, MAX_GROUPS + 1):
        low = kse_effective_params(layers, others, g, t_max)
        smallest = low if smallest is None else min(smallest, low)
        if low > target:
            continue
        if kse_effective_params(layers, others, g, 0.0) <= target:
            return g, 0.0, kse_effective_params(layers, others, g, 0.0)
        lo, hi = 0.0, t_max
        while hi - lo > 1e-3:
            mid = (lo + hi) / 2
            if kse_effective_params(layers, others, g, mid) <= target:
                hi = mid
            else:
                lo = mid
        t = math.ceil(hi * 1000) / 1000
        return g, t, kse_effective_params(layers, others, g, t)
    raise ValueError(f'target {target:,.0f} parameters is below what KSE '
                     f'reaches with G up to {MAX_GROUPS} ({smallest:,.0f})')


def compress_kse(model: nn.Module, layers: Sequence[KSELayer], groups: int,
                 t: float, seed: int = 0) -> Dict[str, dict]:
    """Replace, in place, every listed conv by its :class:`KSEConv` at (G, T).

    Returns:
        ``{name: dict(q=[...])}``, the structure a config records
        (:mod:`fsnet_mmdet.compression.structure`).
    """
    spec = {}
    for i, layer in enumerate(layers):
        q = layer.q(groups, t).tolist()
        conv = model.get_submodule(layer.name)
        replace_module(model, layer.name,
                       kse_from_conv2d(conv, q, seed=seed + 1000003 * i))
        spec[layer.name] = dict(q=q)
    return spec
