"""Fit FS layers to what the dense layers compute (output reconstruction).

Weight-space projection keeps little of a trained dense model (every summary
element the mean of the weights that map to it). Reconstruction fits what a
layer computes instead, as channel pruning does (He et al., ICCV 2017;
ThiNet, ICCV 2017): on a few calibration images, layer by layer in forward
order, each FS conv's summary ``s`` minimizes

    || conv(X_fs, W(s)) - Y_dense ||^2,     W(s) = s[index]

where ``Y_dense`` are the dense layer's outputs on the dense network's
inputs and ``X_fs`` the FS layer's inputs from the already reconstructed
layers below it, so errors do not pile up. The problem is linear in ``s``:
with patches ``X`` (P, D) at P sampled output positions, targets ``Y``
(P, K), ``G = X^T X`` and ``B = Y^T X``, the normal equations read
``A^T (s[index] G) = A^T B`` (``A^T``: the sum over the weight elements that
read each summary element, Eq. 2's scatter). :func:`fit_summary` solves them
by conjugate gradients with a small ridge towards the starting summary.
"""
from __future__ import annotations

from typing import Callable, Dict, Iterable, List, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..layers.fsconv import FSConv
from ..layers.summary import SummaryWeightMixin
from ..utils.modules import replace_module


def dense_twin(fs_model: nn.Module, dense_state: Dict[str, Tensor]) -> nn.Module:
    """The dense detector a dense checkpoint of ``fs_model``'s detector holds.

    A deep copy of ``fs_model`` with every FS layer baked into the dense
    module it replaces (``to_conv2d`` / ``to_linear``), then ``dense_state``
    loaded strictly: no dense config needed.

    Raises:
        RuntimeError: the state dict does not fit (torch's strict load).
    """
    import copy
    twin = copy.deepcopy(fs_model)
    for name, module in list(twin.named_modules()):
        if isinstance(module, SummaryWeightMixin):
            dense = module.to_conv2d() if isinstance(module, FSConv) else (
                module.to_linear())
            replace_module(twin, name, dense)
    twin.load_state_dict(dense_state, strict=True)
    return twin.eval()


def _scatter(weight: Tensor, index: Tensor, numel: int) -> Tensor:
    """``A^T w``: for every summary element, the sum of the weight elements
    (K, D) that read it."""
    return weight.new_zeros(numel).index_add_(0, index.reshape(-1), weight.reshape(-1))


def fit_summary(gram: Tensor, cross: Tensor, index: Tensor, init: Tensor,
                ridge: float = 1e-3, iters: int = 100, tol: float = 1e-4) -> Tensor:
    """The summary minimizing ``||X s[index]^T - Y||^2 + r ||s - init||^2``.

    Conjugate gradients on the normal equations, preconditioned by the
    diagonal of ``A^T (I_K x G) A`` (each summary element's sum of the
    ``G_dd`` of the weight elements that read it; Jacobi).

    Args:
        gram: (D, D) ``X^T X`` of the layer's input patches (D = C S1 S2).
        cross: (K, D) ``Y^T X``.
        index: (K, D) flat summary indices (long), the layer's index reshaped.
        init: flat (numel,) starting summary (e.g. the weight projection).
        ridge: r as a fraction of the mean diagonal of ``gram`` (keeps the
            problem well posed where the calibration data leave a direction
            undetermined).
        iters: at most this many conjugate-gradient iterations.
        tol: stop when the preconditioned residual norm falls below ``tol``
            times its start.

    Returns:
        The flat (numel,) summary, solved in float64, in ``init``'s dtype.
    """
    g, b = gram.double(), cross.double()
    s0 = init.double()
    numel = s0.numel()
    r = ridge * float(g.diagonal().mean()) if g.numel() else ridge

    def hess(v: Tensor) -> Tensor:
        return _scatter(v[index] @ g, index, numel) + r * v

    diag = _scatter(g.diagonal().expand(index.shape[0], -1), index, numel) + r
    inv_diag = 1.0 / diag.clamp(min=1e-30)
    rhs = _scatter(b, index, numel) + r * s0
    s = s0.clone()
    res = rhs - hess(s)
    z = inv_diag * res
    p = z.clone()
    rz = res.dot(z)
    stop = tol ** 2 * float(rz)
    for _ in range(iters):
        if float(rz) <= stop or float(rz) == 0.0:
            break
        hp = hess(p)
        alpha = rz / p.dot(hp)
        s += alpha * p
        res -= alpha * hp
        z = inv_diag * res
        rz_new = res.dot(z)
        p = z + (rz_new / rz) * p
        rz = rz_new
    return s.to(init.dtype)


def conv_patches(conv: nn.Conv2d, inputs: Tensor, positions: Tensor) -> Tensor:
    """Input patches of a conv at given output positions.

    Args:
        conv: the layer (its kernel, stride, padding, dilation; groups=1).
        inputs: (C, H, W) input of one image.
        positions: flat output positions (long), row-major over (Ho, Wo).

    Returns:
        (len(positions), C * S1 * S2) patches in the weight's
        ``reshape(K, -1)`` order: ``patches @ weight.reshape(K, -1).T`` is
        the conv's output at those positions (without bias).
    """
    cols = F.unfold(inputs[None], conv.kernel_size, dilation=conv.dilation,
                    padding=conv.padding, stride=conv.stride)[0]
    return cols[:, positions].T


class _Stop(Exception):
    """Raised by a capture hook: the rest of the forward is not needed."""


def _capture(model: nn.Module, layer: nn.Module, data: dict,
             what: str) -> Tensor:
    """Run ``model`` on a preprocessed batch until ``layer``; its input or output."""
    box = {}

    def hook(module, args, output):
        box['value'] = (args[0] if what == 'input' else output).detach()
        raise _Stop

    handle = layer.register_forward_hook(hook)
    try:
        model(**data, mode='tensor')
    except _Stop:
        pass
    finally:
        handle.remove()
    return box['value']


def _outputs(model: nn.Module, layers: List[nn.Module], data: dict,
             take: Callable[[int, Tensor], object]) -> List[object]:
    """One forward of ``model`` on a preprocessed batch: ``take(j, output)``
    of the first call of every ``layers[j]`` (a head shared by the levels
    of a pyramid: the first level's, as :func:`_capture` sees it)."""
    taken: Dict[int, object] = {}

    def hook(j):
        def record(module, args, output):
            if j not in taken:
                taken[j] = take(j, output.detach())
        return record

    handles = [m.register_forward_hook(hook(j)) for j, m in enumerate(layers)]
    try:
        model(**data, mode='tensor')
    finally:
        for handle in handles:
            handle.remove()
    return [taken[j] for j in range(len(layers))]


@torch.no_grad()
def reconstruct(fs_model: nn.Module, dense_model: nn.Module,
                batches: Iterable[dict], positions_per_image: int = 256,
                ridge: float = 1e-3, seed: int = 0) -> List[Tuple[str, float, float]]:
    """Fit every FSConv of ``fs_model`` to its dense twin's outputs, in order.

    Args:
        fs_model: the FS detector, its summaries initialized (e.g. by the
            weight projection: the starting point and the ridge's target).
        dense_model: the trained dense detector (same module names).
        batches: calibration data batches (e.g. a few of the train loader).
        positions_per_image: output positions sampled per image and layer.
        ridge: see :func:`fit_summary`.
        seed: the sampling's random seed.

    Returns:
        (layer name, relative output error before, after) per FSConv, each
        ``||X W^T - Y|| / ||Y||`` on the sampled positions (before: with the
        starting summary on the same reconstructed inputs).

    Raises:
        ValueError: a layer of ``fs_model`` that is FS has no dense conv of
            the same name and shape in ``dense_model``, or no data.
    """
    batches = list(batches)
    if not batches:
        raise ValueError('reconstruct: no calibration batch')
    data = [fs_model.data_preprocessor(b, training=False) for b in batches]
    dense = dict(dense_model.named_modules())
    layers = [(n, m) for n, m in fs_model.named_modules()
              if isinstance(m, FSConv) and not m.searching]
    for name, layer in layers:
        twin = dense.get(name)
        if not isinstance(twin, nn.Conv2d) or tuple(twin.weight.shape) != tuple(
                layer.index.shape):
            raise ValueError(f'reconstruct: FS layer {name} needs a dense conv '
                             f'of the same name with weight shape '
                             f'{tuple(layer.index.shape)} in the dense model')
    fs_model.eval(), dense_model.eval()
    twins = [dense[name] for name, _ in layers]
    # The dense outputs do not change: one forward per batch for their
    # sizes, the positions drawn in (layer, batch, image) order, one forward
    # per batch for the outputs at them (not a forward per layer).
    sizes = [_outputs(dense_model, twins, d, lambda j, y: y.shape) for d in data]
    gen = torch.Generator().manual_seed(seed)
    positions = [[[torch.randperm(size[j][-2] * size[j][-1], generator=gen)[
        :positions_per_image] for _ in range(size[j][0])] for size in sizes]
        for j in range(len(layers))]
    targets = [_outputs(dense_model, twins, d, lambda j, y, b=b: [
        y[i].reshape(y.shape[1], -1)[:, pos.to(y.device)].T
        for i, pos in enumerate(positions[j][b])]) for b, d in enumerate(data)]
    report = []
    for j, (name, layer) in enumerate(layers):
        twin = twins[j]
        k = layer.out_channels
        xs, ys = [], []
        for b, d in enumerate(data):
            x = _capture(fs_model, layer, d, 'input')
            for i, pos in enumerate(positions[j][b]):
                px = conv_patches(layer, x[i], pos.to(x.device)).double()
                py = targets[b][j][i].double()
                if twin.bias is not None:
                    py = py - twin.bias.double()
                xs.append(px), ys.append(py)
        px, py = torch.cat(xs), torch.cat(ys)
        if layer.bias is not None:  # a free bias: fit on centred data
            mx, my = px.mean(0), py.mean(0)
            px, py = px - mx, py - my
        gram, cross = px.T @ px, py.T @ px
        index = layer.index.reshape(k, -1).long()
        init = layer.summary.detach().reshape(-1)
        before = float((px @ init.double()[index].T - py).norm())
        summary = fit_summary(gram, cross, index, init, ridge=ridge)
        w = summary.double()[index]
        after = float((px @ w.T - py).norm())
        norm = float(py.norm()) or 1.0
        layer.summary.copy_(summary.view_as(layer.summary))
        if layer.bias is not None:
            layer.bias.copy_((my - w @ mx + (twin.bias.double() if
                              twin.bias is not None else 0)).to(layer.bias.dtype))
        report.append((name, before / norm, after / norm))
    return report
