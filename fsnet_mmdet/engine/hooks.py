"""Every training hook of the package: the loss guard, the DFS search
schedule, structural regularization towards FS and feature distillation
(their pure parts live in :mod:`fsnet_mmdet.conversion`)."""
from __future__ import annotations

import math
import os
from typing import Optional, Sequence, Tuple, Union

import torch
from mmengine.dist import is_main_process
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmdet.registry import HOOKS
from torch import nn

from ..conversion.distillation import Distiller, features_module
from ..conversion.regularization import (StructuralRegularizer,
                                         fs_target_layers, lambda_at)
from ..layers.summary import SummaryWeightMixin
from ..utils.io import write_json_atomic
from .checkpoint import load_into


@HOOKS.register_module()
class FiniteLossHook(Hook):
    """Stop at the first non-finite loss, with the likely fix.

    mmdet's ``CheckInvalidLossHook`` checks every 50 iterations and says only
    that the loss is NaN; this hook checks every iteration (the loss is
    already a logged scalar) and names the loss terms and the remedies.
    """

    priority = 'VERY_LOW'

    def after_train_iter(self, runner, batch_idx, data_batch=None,
                         outputs=None) -> None:
        if not outputs or 'loss' not in outputs:
            return
        values = {k: float(v.detach() if isinstance(v, torch.Tensor) else v)
                  for k, v in outputs.items() if 'loss' in k}
        if all(math.isfinite(v) for v in values.values()):
            return
        terms = ', '.join(f'{k}={v}' for k, v in values.items())
        raise FloatingPointError(
            f'iteration {runner.iter + 1}: non-finite loss ({terms}). '
            f'From-scratch detectors diverge when the learning rate is too '
            f'high: lower optim_wrapper.optimizer.lr (or train with a smaller '
            f'batch and --auto-scale-lr), lengthen the warm-up (the LinearLR '
            f'param_scheduler\'s end) or clip gradients '
            f'(optim_wrapper.clip_grad=dict(max_norm=...)); then --resume from '
            f'the last checkpoint.')


@HOOKS.register_module()
class DFSSearchHook(Hook):
    """Differentiable FSNet's schedule: search the filter locations, then fix them.

    For the first ``search_iters`` training iterations every searching FS
    layer (``dfs_radius >= 1``) mixes its candidate blocks with the softmax of
    its logits at a temperature annealed geometrically from
    ``temperature[0]`` to ``temperature[1]`` (logged as ``dfs_temperature``);
    before the next iteration every such layer is discretized
    (:meth:`~fsnet_mmdet.layers.summary.SummaryWeightMixin.discretize`): it
    keeps its most likely location and trains on as a plain FS layer. A
    checkpoint saved after that holds each layer's int8 ``offsets`` and no
    logits; loading it (``tools/test.py``, ``--resume``) discretizes the
    model built from the same config.

    Args:
        search_iters: length of the search: an int number of iterations, or
            a float in (0, 1), that fraction of the training's ``max_iters``.
            It must end before training does.
        temperature: (start, end) softmax temperatures, both > 0.
    """

    priority = 'NORMAL'

    def __init__(self, search_iters: Union[int, float] = 0.5,
                 temperature: Sequence[float] = (1.0, 0.1)) -> None:
        if isinstance(search_iters, bool) or not (
                (isinstance(search_iters, int) and search_iters >= 1) or
                (isinstance(search_iters, float) and 0 < search_iters < 1)):
            raise ValueError(f'search_iters must be an int >= 1 or a float in '
                             f'(0, 1) (a fraction of max_iters), got '
                             f'{search_iters!r}')
        if len(temperature) != 2 or not all(
                isinstance(t, (int, float)) and 0 < t < math.inf
                for t in temperature):
            raise ValueError(f'temperature must be (start, end), two positive '
                             f'numbers, got {temperature!r}')
        self.search_iters = search_iters
        self.temperature = tuple(float(t) for t in temperature)
        self.end = None

    @staticmethod
    def searching_layers(runner) -> list:
        model = runner.model
        if is_model_wrapper(model):
            model = model.module
        return [m for m in model.modules()
                if isinstance(m, SummaryWeightMixin) and m.searching]

    def before_train(self, runner) -> None:
        max_iters = runner.max_iters
        end = (self.search_iters if isinstance(self.search_iters, int)
               else round(self.search_iters * max_iters))
        if not 1 <= end < max_iters:
            raise ValueError(f'DFSSearchHook: search_iters={self.search_iters!r} '
                             f'gives a search of {end} iterations, which must '
                             f'end before training does (max_iters={max_iters})')
        if not self.searching_layers(runner) and runner.iter < end:
            raise ValueError('DFSSearchHook: the model has no searching FS '
                             'layer; give its FSConv / FSLinear dfs_radius=1 '
                             '(or more)')
        self.end = end

    def before_train_iter(self, runner, batch_idx: int,
                          data_batch=None) -> None:
        layers = self.searching_layers(runner)
        if not layers:
            return
        if runner.iter >= self.end:
            for m in layers:
                m.discretize()
            moved = sum(m.moved_filters() for m in layers)
            total = sum(len(m.offsets) for m in layers)
            runner.logger.info(
                f'DFSNet: iteration {runner.iter}: {len(layers)} layers '
                f'discretized; {moved} of {total} filters left their grid '
                f'location')
            return
        start, stop = self.temperature
        t = start * (stop / start) ** (runner.iter / self.end)
        for m in layers:
            m.dfs_temperature = t
        runner.message_hub.update_scalar('train/dfs_temperature', t)


# ------------------------------------------------ structural regularization

def _iters(name: str, value: Union[int, float], max_iters: int) -> int:
    """An iteration count given as an int, or as a fraction of ``max_iters``."""
    if isinstance(value, bool) or not (
            (isinstance(value, int) and value >= 0) or
            (isinstance(value, float) and 0 <= value <= 1)):
        raise ValueError(f'FSRegularizationHook: {name} must be an int >= 0 '
                         f'or a float in [0, 1] (a fraction of max_iters), got '
                         f'{value!r}')
    return value if isinstance(value, int) else round(value * max_iters)


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


# ------------------------------------------------------------ distillation

@HOOKS.register_module()
class FSDistillationHook(Hook):
    """Distil a frozen teacher's neck features into the model being trained.

    Adds ``weight * sum_levels CWD(student, teacher)`` to the loss, logged as
    ``loss_cwd``. The teacher is built from its own config and loaded from
    its checkpoint strictly (every key, every shape) before the first
    iteration; it stays in eval mode (BatchNorm statistics fixed) with no
    parameter requiring a gradient.

    Args:
        teacher_config: path of the teacher's config (its ``model`` is built).
        teacher_checkpoint: the teacher's trained checkpoint.
        weight: loss weight, > 0 (CWD's papers use 3-10 on FPN outputs).
        tau: softmax temperature, > 0.
    """

    priority = 'NORMAL'

    def __init__(self, teacher_config: str, teacher_checkpoint: str,
                 weight: float = 3.0, tau: float = 1.0) -> None:
        for name, path in (('teacher_config', teacher_config),
                           ('teacher_checkpoint', teacher_checkpoint)):
            if not isinstance(path, str) or not os.path.isfile(path):
                raise ValueError(f'FSDistillationHook: {name} {path!r} does '
                                 f'not exist')
        for name, value in (('weight', weight), ('tau', tau)):
            if isinstance(value, bool) or not isinstance(
                    value, (int, float)) or not 0 < value < float('inf'):
                raise ValueError(f'FSDistillationHook: {name} must be a '
                                 f'positive number, got {value!r}')
        self.teacher_config = teacher_config
        self.teacher_checkpoint = teacher_checkpoint
        self.weight, self.tau = float(weight), float(tau)
        self.teacher = None

    def build_teacher(self) -> nn.Module:
        """The teacher: built, loaded strictly, frozen, in eval mode."""
        from mmengine.config import Config
        from mmdet.registry import MODELS

        teacher = MODELS.build(Config.fromfile(self.teacher_config).model)
        try:
            load_into(teacher, self.teacher_checkpoint)  # strict, then eval()
        except ValueError as err:
            raise ValueError(f'FSDistillationHook: teacher checkpoint does not '
                             f'fit teacher_config {self.teacher_config}: '
                             f'{err}') from None
        teacher.requires_grad_(False)
        return teacher.eval()

    def before_train(self, runner) -> None:
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        device = next(model.parameters()).device
        self.teacher = self.build_teacher().to(device)
        distiller = Distiller(self.teacher, self.weight, self.tau)
        self._handles = [
            features_module(model).register_forward_hook(distiller.capture),
            model.register_forward_hook(distiller, with_kwargs=True)]
        runner.logger.info(
            f'FSDistillationHook: teacher {self.teacher_config} '
            f'({self.teacher_checkpoint}) frozen; CWD on '
            f'{"neck" if getattr(model, "neck", None) is not None else "backbone"}'
            f' outputs, weight {self.weight:g}, tau {self.tau:g}')

    def after_train(self, runner) -> None:
        for handle in self._handles:
            handle.remove()
