"""Training hooks."""
import math
from typing import Sequence, Union

import torch

from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmdet.registry import HOOKS

from .layers.summary import SummaryWeightMixin


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
