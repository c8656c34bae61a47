"""Function-preserving channel permutations that bring a dense model closer to FS.

Permuting a conv's output channels together with the per-channel modules
after it (BatchNorm, L2Norm) and the input channels of every conv that reads
them changes nothing the network computes. It does change which dense
filters share summary elements once the model is projected to FS (filter
``k`` of a layer is cut from the summary at the ``k``-th grid position, and
its input channel ``c`` from the ``c``-th slice of it): the order can be
chosen so that the weights that will share a summary element are similar,
which lowers the projection error before any training.

Three steps, each a function:

* :func:`trace_channel_spaces`: the model's *channel spaces* (a conv's
  output channels, the modules that keep them, the convs that read them),
  found by one traced forward; a space whose channels reach anything the
  trace cannot follow (the network's outputs, a residual add, a concat, a
  grouped conv, a linear layer) is left alone, and every space kept is
  checked by permuting it and comparing the network's outputs.
* :func:`fs_order`: the order of one space's channels that maximizes, over
  the FS layers it touches (the producer along its filters, the consumers
  along their input channels), the weight kept by the projection
  ``sum_e S_e^2 / n_e / ||W||^2`` (``S_e`` the sum of the ``n_e`` weights
  that read summary element ``e``; Eq. 2's least-squares summary is
  ``S_e / n_e``, and ``||W - P_FS(W)||^2 = ||W||^2 - sum_e S_e^2 / n_e``).
  Greedy pairwise swaps: each step scores a batch of random swaps exactly
  and takes the best that helps.
* :func:`apply_permutation`: permutes the weights of one space in place.

:func:`permute_for_fs` runs all three over a model; ``tools/convert.py
--permute N`` applies it to the dense checkpoint before the projection.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from ..layers.summary import SummaryWeightMixin

#: Modules that keep the channel order of their input (elementwise or
#: per-channel); those with a per-channel parameter are permuted with it.
_KEEP_CHANNELS = (nn.BatchNorm2d, nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.SiLU,
                  nn.Sigmoid, nn.Hardswish, nn.GELU, nn.MaxPool2d,
                  nn.AvgPool2d, nn.Dropout, nn.Identity, nn.Upsample)
_PER_CHANNEL_PARAMS = ('weight', 'bias', 'running_mean', 'running_var')


@dataclass
class ChannelSpace:
    """The output channels of one conv and everything that indexes them.

    Attributes:
        producer: name of the conv whose output channels these are.
        followers: modules with one parameter per channel applied to them
            (BatchNorm, L2Norm): permuted with the producer.
        consumers: convs that read the channels (permuted along their
            input channels).
        blocked: why the space cannot be permuted ('' if it can).
    """

    producer: str
    followers: List[str] = field(default_factory=list)
    consumers: List[str] = field(default_factory=list)
    blocked: str = ''


def _is_plain_conv(module: nn.Module) -> bool:
    return isinstance(module, nn.Conv2d) and module.groups == 1


def _per_channel(module: nn.Module) -> bool:
    """A module scaling each channel by its own parameter (L2Norm)."""
    weight = getattr(module, 'weight', None)
    return (type(module).__name__ == 'L2Norm' and isinstance(weight, Tensor)
            and weight.dim() == 1)


@torch.no_grad()
def trace_channel_spaces(model: nn.Module, inputs: Tensor) -> List[ChannelSpace]:
    """Find the model's channel spaces by one forward of ``inputs``.

    Every leaf module gets a forward hook: a plain conv (``groups == 1``)
    starts a new space on its output and joins its input's space as a
    consumer; a module of :data:`_KEEP_CHANNELS` or an L2Norm passes its
    input's space on; any other module reading a space blocks it, and so do
    the network's outputs. Operations outside modules (a residual add, a
    concat) are invisible to the hooks: :func:`permute_for_fs` checks every
    space on the network's outputs instead.

    Args:
        model: an MMDetection detector (``model(inputs, mode='tensor')``).
        inputs: (N, 3, H, W) preprocessed images.

    Returns:
        The spaces in forward order of their producers.
    """
    spaces: Dict[str, ChannelSpace] = {}
    label: Dict[int, str] = {}
    alive: List[Tensor] = []  # keeps traced tensors alive: ids stay unique

    def hook(module, args, output):
        name = names[module]
        source = label.get(id(args[0])) if args and isinstance(args[0], Tensor) else None
        if _is_plain_conv(module):
            if source:
                spaces[source].consumers.append(name)
            spaces[name] = ChannelSpace(name)
            label[id(output)] = name
        elif isinstance(module, _KEEP_CHANNELS) or _per_channel(module):
            if source:
                label[id(output)] = source
                if isinstance(module, nn.BatchNorm2d) or _per_channel(module):
                    spaces[source].followers.append(name)
        elif source:
            spaces[source].blocked = f'read by {name} ({type(module).__name__})'
        alive.append(output)

    names = {m: n for n, m in model.named_modules()}
    leaves = [m for m in model.modules() if not list(m.children()) or
              _per_channel(m)]
    handles = [m.register_forward_hook(hook) for m in leaves]
    try:
        outputs = model(inputs, mode='tensor')
    finally:
        for h in handles:
            h.remove()
    for out in _tensors(outputs):
        if id(out) in label:
            spaces[label[id(out)]].blocked = 'an output of the network'
    for space in spaces.values():
        if not space.consumers and not space.blocked:
            space.blocked = 'read by no conv the trace follows'
    return list(spaces.values())


def _tensors(outputs) -> List[Tensor]:
    if isinstance(outputs, Tensor):
        return [outputs]
    if isinstance(outputs, (list, tuple)):
        return [t for o in outputs for t in _tensors(o)]
    if isinstance(outputs, dict):
        return [t for o in outputs.values() for t in _tensors(o)]
    return []


@torch.no_grad()
def apply_permutation(model: nn.Module, space: ChannelSpace, perm: Tensor) -> None:
    """Reorder a space's channels in place: new channel ``i`` is old ``perm[i]``.

    Args:
        model: the model holding the space's modules.
        space: the channel space.
        perm: long tensor (C,), a permutation of ``range(C)``.
    """
    producer = model.get_submodule(space.producer)
    producer.weight.copy_(producer.weight[perm])
    if producer.bias is not None:
        producer.bias.copy_(producer.bias[perm])
    for name in space.followers:
        module = model.get_submodule(name)
        for key in _PER_CHANNEL_PARAMS:
            value = getattr(module, key, None)
            if isinstance(value, Tensor):
                value.copy_(value[perm])
    for name in space.consumers:
        weight = model.get_submodule(name).weight
        weight.copy_(weight[:, perm])


@dataclass
class _Term:
    """One FS layer's weight along the permuted axis (moved to dim 0)."""

    weight: Tensor     # (C, rest...): row i is channel i of the current order
    index: Tensor      # (C, rest...) long: summary element of each entry
    inv_n: Tensor      # (numel,) 1 / multiplicity
    scale: float       # 1 / ||W||^2
    sums: Tensor       # (numel,) S_e for the current order

    @classmethod
    def of(cls, weight: Tensor, index: Tensor, numel: int, axis: int) -> '_Term':
        w = weight.detach().double().transpose(0, axis).clone()
        idx = index.long().transpose(0, axis).contiguous()
        count = torch.zeros(numel, dtype=torch.double).index_add_(
            0, idx.reshape(-1), torch.ones(idx.numel(), dtype=torch.double))
        sums = torch.zeros(numel, dtype=torch.double).index_add_(
            0, idx.reshape(-1), w.reshape(-1))
        norm = float(w.pow(2).sum()) or 1.0
        return cls(w, idx, 1 / count.clamp(min=1), 1 / norm, sums)

    def kept(self) -> float:
        """``sum_e S_e^2 / n_e / ||W||^2``: 1 - the relative squared residual."""
        return float((self.sums.pow(2) * self.inv_n).sum()) * self.scale

    def swap_deltas(self, p: Tensor, q: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        """How each swap of rows ``p[b]``, ``q[b]`` changes ``S`` and :meth:`kept`.

        Only the summary elements the two rows read change: per swap, the
        rows' indices are sorted and equal ones merged, so the cost grows
        with a row's size, not the summary's.

        Args:
            p, q: (B,) long row pairs.

        Returns:
            ``(elements, deltas, gains)``: (B, 2D) summary elements and the
            change of ``S`` at each (D a row's size; padding entries change
            nothing), and (B,) the exact change of :meth:`kept`.
        """
        b = len(p)
        diff = (self.weight[q] - self.weight[p]).reshape(b, -1)
        idx = torch.cat([self.index[p].reshape(b, -1),
                         self.index[q].reshape(b, -1)], 1)
        idx, order = idx.sort(1)
        vals = torch.cat([diff, -diff], 1).gather(1, order)
        first = torch.ones_like(idx, dtype=torch.bool)
        first[:, 1:] = idx[:, 1:] != idx[:, :-1]
        group = first.long().cumsum(1) - 1
        deltas = torch.zeros_like(vals).scatter_add_(1, group, vals)
        elements = torch.zeros_like(idx).scatter_(1, group, idx)
        gains = ((2 * self.sums[elements] + deltas) * deltas *
                 self.inv_n[elements]).sum(1) * self.scale
        return elements, deltas, gains

    def swap(self, p: int, q: int, elements: Tensor, deltas: Tensor) -> None:
        """Apply the swap of rows p, q (its row of :meth:`swap_deltas`)."""
        self.weight[[p, q]] = self.weight[[q, p]]
        self.sums.index_add_(0, elements, deltas)


def fs_order(terms: Sequence[_Term], channels: int, steps: int = 100,
             batch: int = 64, generator: Optional[torch.Generator] = None
             ) -> Tuple[Tensor, float, float]:
    """Order one space's channels to keep the most weight under projection.

    Greedy: each of ``steps`` steps scores ``batch`` random swaps exactly
    (:meth:`_Term.swap_deltas`, summed over the terms) and applies the best
    one if it raises the objective. The terms' state follows the swaps.

    Args:
        terms: the FS layers the space's order enters.
        channels: C, the number of channels.
        steps: number of steps.
        batch: swaps scored per step.
        generator: random source of the candidate swaps.

    Returns:
        ``(perm, before, after)``: the permutation (new channel ``i`` is old
        ``perm[i]``) and the objective (sum over terms of the kept fraction)
        before and after.
    """
    perm = torch.arange(channels)
    before = sum(t.kept() for t in terms)
    if channels < 2 or not terms:
        return perm, before, before
    for _ in range(steps):
        p = torch.randint(channels, (batch,), generator=generator)
        q = (p + torch.randint(1, channels, (batch,), generator=generator)) % channels
        scored = [t.swap_deltas(p, q) for t in terms]
        gain = torch.stack([g for _, _, g in scored]).sum(0)
        best = int(gain.argmax())
        if float(gain[best]) <= 1e-12:
            continue
        i, j = int(p[best]), int(q[best])
        for term, (elements, deltas, _) in zip(terms, scored):
            term.swap(i, j, elements[best], deltas[best])
        perm[[i, j]] = perm[[j, i]]
    return perm, before, sum(t.kept() for t in terms)


def _outputs_equal(a, b, rtol: float = 1e-4) -> bool:
    ta, tb = _tensors(a), _tensors(b)
    return len(ta) == len(tb) and all(
        (x - y).abs().max() <= rtol * (x.abs().max() + 1e-12) for x, y in zip(ta, tb))


@torch.no_grad()
def permute_for_fs(dense_model: nn.Module, fs_model: nn.Module, inputs: Tensor,
                   steps: int = 100, batch: int = 64, seed: int = 0
                   ) -> List[Tuple[ChannelSpace, float, float]]:
    """Permute a dense model's channels so that its FS projection keeps more.

    The dense model's function is unchanged (checked on ``inputs``); its FS
    layers' projection error falls.

    Args:
        dense_model: the trained dense detector, permuted in place (eval mode
            for the check).
        fs_model: the FS detector it will be projected into: the FS layer of
            the same name gives each dense conv its summary index.
        inputs: (N, 3, H, W) preprocessed images for the trace and the check.
        steps: :func:`fs_order` steps per space.
        batch: swaps scored per step.
        seed: random seed of the swaps.

    Returns:
        Per space (in forward order): the space and its objective before and
        after (sum over the FS layers it touches of ``1 - ||W - P(W)||^2 /
        ||W||^2``). Blocked spaces come with equal values.

    Raises:
        RuntimeError: permuting the traceable spaces changed the network's
            outputs for a reason no single space explains.
    """
    dense_model.eval()
    spaces = trace_channel_spaces(dense_model, inputs)
    reference = dense_model(inputs, mode='tensor')
    gen = torch.Generator().manual_seed(seed)
    _check_spaces(dense_model, spaces, inputs, reference, gen)

    fs = {n: m for n, m in fs_model.named_modules()
          if isinstance(m, SummaryWeightMixin)}
    report = []
    for space in spaces:
        if space.blocked:
            report.append((space, 0.0, 0.0))
            continue
        terms = [_Term.of(dense_model.get_submodule(n).weight, fs[n].index,
                          fs[n].summary.numel(), axis)
                 for n, axis in [(space.producer, 0)] +
                 [(c, 1) for c in space.consumers] if n in fs]
        channels = dense_model.get_submodule(space.producer).out_channels
        perm, before, after = fs_order(terms, channels, steps, batch, gen)
        apply_permutation(dense_model, space, perm)
        report.append((space, before, after))
    if not _outputs_equal(reference, dense_model(inputs, mode='tensor')):
        raise RuntimeError('permute_for_fs: the permuted model computes '
                           'something else (report this model)')
    return report


def _check_spaces(model: nn.Module, spaces: List[ChannelSpace], inputs: Tensor,
                  reference, gen: torch.Generator) -> None:
    """Block the spaces whose permutation changes the model's outputs (joined
    outside modules: residual adds, concats); the model is left unchanged.

    All spaces are tried at once first (one forward when none is joined, as
    in a plain chain like SSD's VGG); only if that fails, one by one.
    """
    def trial(group: List[ChannelSpace]) -> bool:
        perms = [torch.randperm(model.get_submodule(s.producer).out_channels,
                                generator=gen) for s in group]
        for space, perm in zip(group, perms):
            apply_permutation(model, space, perm)
        same = _outputs_equal(reference, model(inputs, mode='tensor'))
        for space, perm in zip(reversed(group), reversed(perms)):
            apply_permutation(model, space, torch.argsort(perm))
        return same

    candidates = [s for s in spaces if not s.blocked]
    if not candidates or trial(candidates):
        return
    for space in candidates:
        if not trial([space]):
            space.blocked = 'joined to other channels outside modules'
