"""Structural regularization: bring a trained dense model to the FS structure.

Projecting a freely trained dense weight onto the filter-summary subspace
loses almost everything (relative error ~0.93 on the demo's SSD300): the
projection ``P_FS`` (each summary element the mean of the weights that map to
it, :func:`~fsnet_mmdet.layers.functional.project_filters`) is already the
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
:class:`FSRegularizationHook` builds it from the FS model the dense one will be
projected into, ramps lambda and logs the residuals.
"""
from __future__ import annotations

import math
import os
from typing import Dict, Optional, Sequence, Tuple, Union

import torch
from mmengine.dist import is_main_process
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmdet.registry import HOOKS
from torch import Tensor, nn

from .conversion.modules import _matches
from .layers.functional import project_filters
from .layers.summary import SummaryWeightMixin


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
            if not any(_matches(n, [pattern]) for n in fs):
                raise ValueError(
                    f'FSRegularizationHook: include pattern {pattern!r} matches '
                    f'no FS layer of the target; its FS layers are named like '
                    f'{sorted(fs)[:3]}')
        fs = {n: m for n, m in fs.items() if _matches(n, patterns)}
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


def _iters(name: str, value: Union[int, float], max_iters: int) -> int:
    """An iteration count given as an int, or as a fraction of ``max_iters``."""
    if isinstance(value, bool) or not (
            (isinstance(value, int) and value >= 0) or
            (isinstance(value, float) and 0 <= value <= 1)):
        raise ValueError(f'FSRegularizationHook: {name} must be an int >= 0 '
                         f'or a float in [0, 1] (a fraction of max_iters), got '
                         f'{value!r}')
    return value if isinstance(value, int) else round(value * max_iters)


def lambda_at(it: int, lam: Tuple[float, float], ramp_iters: int) -> float:
    """A ramped value at iteration ``it``: geometric from ``lam[0]`` to
    ``lam[1]`` over ``ramp_iters`` iterations, then held at ``lam[1]``."""
    start, end = lam
    if ramp_iters == 0 or it >= ramp_iters:
        return end
    return start * (end / start) ** (it / ramp_iters)


def _pair(name: str, value, high: float = math.inf) -> Optional[Tuple[float, float]]:
    """A (start, end) pair of numbers in (0, high], or None."""
    if value is None:
        return None
    if (isinstance(value, (str, bytes)) or not hasattr(value, '__len__')
            or len(value) != 2 or not all(
                isinstance(v, (int, float)) and not isinstance(v, bool)
                and 0 < v <= high and v < math.inf for v in value)):
        limit = 'positive finite numbers' if high == math.inf else (
            f'numbers in (0, {high:g}]')
        raise ValueError(f'FSRegularizationHook: {name} must be (start, end), '
                         f'two {limit}, or None; got {value!r}')
    return float(value[0]), float(value[1])


@HOOKS.register_module()
class FSRegularizationHook(Hook):
    """Fine-tune a trained dense detector towards the FS structure.

    Over every layer that is FS in ``target`` (the config of the FS model the
    trained one will be projected into), two ways, alone or together:

    * ``lam``: adds ``lambda(t) * sum_l ||W_l - P_FS(W_l)||^2 / ||W_l||^2``
      to the loss (logged as ``loss_fs_reg``; Structured Convolutions'
      structural regularization);
    * ``shrink``: after every optimizer step, moves each weight a fraction
      ``rate(t)`` of the way to its projection
      (:func:`shrink_towards_fs`): the same penalty as a proximal step,
      decoupled from Adam's per-parameter scaling as AdamW decouples weight
      decay, so the residual falls at a known rate whatever the gradients.

    Both values ramp geometrically from start to end over ``ramp_iters``,
    then stay. Logs the total relative residual (``fs_residual``) every
    logged iteration, the per-layer residuals (worst first) every
    ``log_interval`` iterations, and writes them all to
    ``fs_residuals.json`` in the work dir when training ends. The checkpoint
    stays a dense one: load it into the target (``load_from`` in the FS
    config, or ``tools/convert.py``) to project it.

    Before the first iteration it checks that ``load_from`` (the trained
    model) fits the model exactly: a checkpoint with missing, unexpected or
    reshaped keys is an error, not MMEngine's warning.

    Args:
        target: path of the FS model's config (its ``model`` is built), or
            the model dict itself.
        lam: (start, end) weights of the loss term, both > 0, or None.
        shrink: (start, end) shrink rates in (0, 1], or None.
        ramp_iters: length of the ramps: an int number of iterations or a
            float in [0, 1], that fraction of ``max_iters``; it must end by
            the end of training.
        include: module-name patterns restricting the regularized layers
            (default: every FS layer of the target).
        log_interval: iterations between per-layer residual logs.
    """

    priority = 'NORMAL'

    def __init__(self, target: Union[str, dict],
                 lam: Optional[Sequence[float]] = (0.1, 10.0),
                 shrink: Optional[Sequence[float]] = None,
                 ramp_iters: Union[int, float] = 0.5,
                 include: Optional[Sequence[str]] = None,
                 log_interval: int = 50) -> None:
        if not isinstance(target, (str, dict)):
            raise ValueError(f'FSRegularizationHook: target must be the FS '
                             f'model\'s config path or model dict, got '
                             f'{target!r}')
        if isinstance(target, str) and not os.path.isfile(target):
            raise ValueError(f'FSRegularizationHook: target config {target!r} '
                             f'does not exist')
        self.lam = _pair('lam', lam)
        self.shrink = _pair('shrink', shrink, high=1.0)
        if self.lam is None and self.shrink is None:
            raise ValueError('FSRegularizationHook: give lam (a loss term), '
                             'shrink (a step after each update) or both')
        _iters('ramp_iters', ramp_iters, 1)
        if isinstance(log_interval, bool) or not isinstance(
                log_interval, int) or log_interval < 1:
            raise ValueError(f'FSRegularizationHook: log_interval must be an '
                             f'int >= 1, got {log_interval!r}')
        self.target = target
        self.ramp_iters = ramp_iters
        self.include = include
        self.log_interval = log_interval
        self.regularizer: Optional[StructuralRegularizer] = None
        self.history = []

    def _target_model(self) -> nn.Module:
        from mmengine.config import Config
        from mmdet.registry import MODELS
        cfg = (Config.fromfile(self.target).model
               if isinstance(self.target, str) else self.target)
        return MODELS.build(cfg)

    @staticmethod
    def _model(runner) -> nn.Module:
        return runner.model.module if is_model_wrapper(runner.model) else runner.model

    def before_train(self, runner) -> None:
        ramp = _iters('ramp_iters', self.ramp_iters, runner.max_iters)
        if ramp > runner.max_iters:
            raise ValueError(f'FSRegularizationHook: the ramp '
                             f'(ramp_iters={self.ramp_iters!r}) lasts {ramp} '
                             f'iterations, past the end of training '
                             f'(max_iters={runner.max_iters})')
        self.ramp = ramp
        model = self._model(runner)
        check_loaded(runner, model)
        layers = fs_target_layers(self._target_model(), model, self.include)
        self.regularizer = StructuralRegularizer(layers, lam=None)
        self._handle = model.register_forward_hook(
            self.regularizer, with_kwargs=True)
        with torch.no_grad():
            _, total = self.regularizer.loss(model)
        ramps = '; '.join(f'{name} {v[0]:g} -> {v[1]:g}' for name, v in (
            ('lambda', self.lam), ('shrink rate', self.shrink)) if v)
        runner.logger.info(
            f'FSRegularizationHook: {len(layers)} layers regularized towards '
            f'{self.target if isinstance(self.target, str) else "the target"}; '
            f'relative residual at start {float(total):.4f}; {ramps} over '
            f'{ramp} iterations')

    def before_train_iter(self, runner, batch_idx: int, data_batch=None) -> None:
        if self.lam is not None:
            lam = lambda_at(runner.iter, self.lam, self.ramp)
            self.regularizer.lam = lam
            runner.message_hub.update_scalar('train/fs_reg_lambda', lam)

    def after_train_iter(self, runner, batch_idx: int, data_batch=None,
                         outputs=None) -> None:
        rate = None
        if self.shrink is not None:
            rate = lambda_at(runner.iter, self.shrink, self.ramp)
            self.regularizer.shrink(self._model(runner), rate)
            runner.message_hub.update_scalar('train/fs_shrink_rate', rate)
        it = runner.iter + 1
        if it % self.log_interval and it != runner.max_iters:
            return
        residuals = self.regularizer.residuals
        total = outputs.get('fs_residual') if outputs else None
        self.history.append(dict(
            iter=it, lam=self.regularizer.lam, shrink=rate,
            layers=dict(residuals), total=None if total is None else float(total)))
        worst = sorted(residuals.items(), key=lambda kv: -kv[1])
        runner.logger.info(
            f'FS residual before the update of iteration {it}: total '
            f'{self.history[-1]["total"]}; worst '
            + ', '.join(f'{n} {r:.4f}' for n, r in worst[:5]))

    def after_train(self, runner) -> None:
        from .utils.io import write_json_atomic
        self._handle.remove()
        with torch.no_grad():
            _, total = self.regularizer.loss(self._model(runner))
        final = dict(self.regularizer.residuals)
        runner.logger.info(f'FSRegularizationHook: relative residual at the '
                           f'end {float(total):.4f}')
        if is_main_process():
            write_json_atomic(os.path.join(runner.work_dir, 'fs_residuals.json'),
                              dict(target=self.target if isinstance(
                                  self.target, str) else None,
                                   final=dict(total=float(total), layers=final),
                                   history=self.history))


def check_loaded(runner, model: nn.Module) -> None:
    """Raise unless the runner's ``load_from`` checkpoint fits ``model`` exactly.

    MMEngine loads ``load_from`` non-strictly (a mismatch is a warning); a
    trained model that did not load would be regularized from its random
    init. Nothing to check without ``load_from`` or on ``--resume``.
    """
    path = getattr(runner, '_load_from', None)
    if not path or getattr(runner, '_resume', False):
        return
    from mmengine.runner.checkpoint import _load_checkpoint
    state = _load_checkpoint(path, map_location='cpu')
    state = state.get('state_dict', state)
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    reshaped = sorted(k for k in set(own) & set(state)
                      if tuple(own[k].shape) != tuple(state[k].shape))
    if missing or unexpected or reshaped:
        raise ValueError(
            f'load_from={path!r} does not fit the model being regularized '
            f'(its config must be the one the checkpoint was trained with): '
            f'missing {missing[:5]}{"..." if len(missing) > 5 else ""}, '
            f'unexpected {unexpected[:5]}{"..." if len(unexpected) > 5 else ""}, '
            f'shapes differ {reshaped[:5]}')
