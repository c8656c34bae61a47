"""Training hooks."""
import math

import torch

from mmengine.hooks import Hook
from mmdet.registry import HOOKS


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
