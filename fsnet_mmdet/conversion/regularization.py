"""Structural regularization: bring a trained dense model to the FS structure.

Projecting a freely trained dense weight onto the filter-summary subspace
loses almost everything (relative error ~0.93 on the demo's SSD300): the
projection ``P_FS`` (each summary element the mean of the weights that map to
it, :func:`~fsnet_mmdet.layers.extraction.project_filters`) is already the
least-squares fit, so no weight-space fit does better. As Structured
Convolutions (Bhalgat et al., NeurIPS 2020) do for their fixed linear
structure, the dense model is instead fine-tuned with its own loss plus

    lambda(t) * sum_l ||W_l - P_FS(W_l)||^2 / ||W_l||^2

over the layers that will become FS, lambda ramped until the residual is
small; the projection (loading the checkpoint into the FS model: ``load_from``
or ``tools/convert.py``) is then nearly lossless and training goes on as FS.

:func:`projection_residual` is the pure function; :class:`StructuralRegularizer`
holds the layers' indices and adds the term to the detector's loss dict (a
forward hook: module names and checkpoints stay the detector's own);
:class:`~fsnet_mmdet.engine.hooks.FSRegularizationHook` builds it from the FS
model the dense one will be projected into, ramps lambda and logs the residuals.
"""
from __future__ import annotations

from typing import Dict, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from .modules import name_matches
from ..layers.extraction import project_filters
from ..layers.summary import SummaryWeightMixin


def fs_projection(weight: Tensor, index: Tensor, numel: int) -> Tensor:
    """``P_FS(W)``: every weight replaced by the mean of the weights that
    share its summary element (:func:`project_filters`, re-extracted)."""
    return project_filters(weight, index, numel)[index.long()]


@torch.no_grad()
def shrink_towards_fs(weight: Tensor, index: Tensor, numel: int,
                      rate: float) -> None:
    """Move a dense weight in place a fraction of the way to its projection.

    ``W <- W - rate * (W - P_FS(W))``: the proximal step of
    ``rate / (2 (1 - rate)) * ||W - P_FS(W)||^2`` (for a step of 1), applied
    after the optimizer's step, decoupled from its gradient scaling as
    AdamW decouples weight decay; ``rate=1`` is the projection itself.

    Args:
        weight: dense weight W, any shape matching ``index``.
        index: the flat summary element each weight element reads.
        numel: number of summary elements.
        rate: fraction in [0, 1].
    """
    weight.sub_(rate * (weight - fs_projection(weight, index, numel)))


def projection_residual(weight: Tensor, index: Tensor, numel: int) -> Tuple[Tensor, Tensor]:
    """Squared distance of a dense weight from the FS subspace, and its norm.

    Args:
        weight: (K, C, S1, S2) conv or (N, C) linear dense weight W.
        index: integer tensor of ``weight``'s shape: the flat summary element
            each weight element reads in the FS layer W will become.
        numel: number of summary elements.

    Returns:
        ``(||W - P_FS(W)||^2, ||W||^2)``, both differentiable scalars.
        ``P_FS(W) = project_filters(W)[index]``: every weight replaced by the
        mean of the weights that share its summary element (the orthogonal
        projection onto the weights an FS layer can express, Eq. 2's fixed
        point), so the gradient of the first is ``2 (W - P_FS(W))``.
    """
    return ((weight - fs_projection(weight, index, numel)).pow(2).sum(),
            weight.pow(2).sum())


class StructuralRegularizer:
    """Adds ``loss_fs_reg`` (and the residuals, for the log) to a loss dict.

    Registered as a forward hook on the detector: on every ``mode='loss'``
    call it reads each regularized layer's current dense weight by name, so
    it holds no parameter (checkpoints, optimizers and deep copies of the
    model are unaffected).

    Attributes:
        layers: {module name: (index, numel)} of the regularized layers.
        lam: the current weight lambda of the term; None: the term is not
            added to the loss (the residuals are still measured, for the log).
        residuals: {module name: ||W - P(W)|| / ||W||} at the last loss call.
    """

    def __init__(self, layers: Dict[str, Tuple[Tensor, int]],
                 lam: Optional[float] = 0.0) -> None:
        if not layers:
            raise ValueError('StructuralRegularizer: no layer to regularize')
        self.layers = layers
        self.lam = lam
        self.residuals: Dict[str, float] = {}

    def loss(self, model: nn.Module) -> Tuple[Tensor, Tensor]:
        """``(sum_l ||W_l - P(W_l)||^2 / ||W_l||^2, total relative residual)``.

        The total is ``sqrt(sum_l ||W_l - P(W_l)||^2 / sum_l ||W_l||^2)``, a
        weight-norm-weighted summary of the per-layer residuals (stored in
        :attr:`residuals`).
        """
        terms, errors, norms = [], [], []
        for name, (index, numel) in self.layers.items():
            weight = model.get_submodule(name).weight
            error, norm = projection_residual(weight, index.to(weight.device), numel)
            terms.append(error / norm)
            errors.append(error.detach())
            norms.append(norm.detach())
        terms = torch.stack(terms)
        self.residuals = dict(zip(self.layers, terms.detach().sqrt().tolist()))
        total = (torch.stack(errors).sum() / torch.stack(norms).sum()).sqrt()
        return terms.sum(), total

    def __call__(self, module: nn.Module, args, kwargs, output):
        if not (module.training and kwargs.get('mode') == 'loss'
                and isinstance(output, dict)):
            return output
        output = dict(output)
        if self.lam is None:
            with torch.no_grad():
                _, output['fs_residual'] = self.loss(module)
            return output
        term, output['fs_residual'] = self.loss(module)
        output['loss_fs_reg'] = term * self.lam
        return output

    def shrink(self, model: nn.Module, rate: float) -> None:
        """:func:`shrink_towards_fs` on every regularized layer."""
        for name, (index, numel) in self.layers.items():
            weight = model.get_submodule(name).weight
            shrink_towards_fs(weight.data, index.to(weight.device), numel, rate)


def fs_target_layers(target: nn.Module, dense: nn.Module,
                     include: Optional[Sequence[str]] = None
                     ) -> Dict[str, Tuple[Tensor, int]]:
    """The index of every FS layer of ``target``, checked against ``dense``.

    Args:
        target: the FS model the dense one will be projected into (built from
            its config: FSConv through ``conv_cfg`` or ``fs_convert``).
        dense: the dense model being fine-tuned.
        include: module-name patterns (``fnmatch``) restricting the layers;
            None for every FS layer of the target.

    Returns:
        {module name: (index, summary numel)}, the same names in both models.

    Raises:
        ValueError: the target has no FS layer; a pattern matches no FS
            layer; a target FS layer has no dense layer of the same name and
            weight shape in ``dense``; a target layer is a DFSNet search.
    """
    fs = {n: m for n, m in target.named_modules()
          if isinstance(m, SummaryWeightMixin)}
    if not fs:
        raise ValueError(f'FSRegularizationHook: the target model '
                         f'({type(target).__name__}) has no FS layer; give the '
                         f'config of the FS model (FSConv / fs_convert)')
    if include is not None:
        patterns = [include] if isinstance(include, str) else list(include)
        for pattern in patterns:
            if not any(name_matches(n, [pattern]) for n in fs):
                raise ValueError(
                    f'FSRegularizationHook: include pattern {pattern!r} matches '
                    f'no FS layer of the target; its FS layers are named like '
                    f'{sorted(fs)[:3]}')
        fs = {n: m for n, m in fs.items() if name_matches(n, patterns)}
    dense_modules = dict(dense.named_modules())
    layers = {}
    for name, layer in fs.items():
        if layer.searching:
            raise ValueError(f'FSRegularizationHook: target layer {name} is a '
                             f'DFSNet search (dfs_radius >= 1): its filters have '
                             f'no fixed location to regularize towards')
        other = dense_modules.get(name)
        weight = getattr(other, 'weight', None)
        if (other is None or isinstance(other, SummaryWeightMixin)
                or not isinstance(weight, Tensor)
                or tuple(weight.shape) != tuple(layer.index.shape)):
            found = ('nothing' if other is None else
                     f'{type(other).__name__} with weight '
                     f'{None if weight is None else tuple(weight.shape)}')
            raise ValueError(
                f'FSRegularizationHook: target FS layer {name} needs a dense '
                f'layer of the same name with a weight of shape '
                f'{tuple(layer.index.shape)} in the trained model; found '
                f'{found}. The target config must be the FS version of the '
                f'trained model\'s config')
        layers[name] = (layer.index.detach().clone(), layer.summary.numel())
    return layers


def lambda_at(it: int, lam: Tuple[float, float], ramp_iters: int) -> float:
    """A ramped value at iteration ``it``: geometric from ``lam[0]`` to
    ``lam[1]`` over ``ramp_iters`` iterations, then held at ``lam[1]``."""
    start, end = lam
    if ramp_iters == 0 or it >= ramp_iters:
        return end
    return start * (end / start) ** (it / ramp_iters)
