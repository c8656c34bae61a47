"""BatchNorm statistics re-estimated after a projection, without training.

Projecting a dense model onto FS (or any change of its weights) changes every
layer's output distribution; the BatchNorm running statistics the dense model
learned no longer describe them. Re-estimating them on a few training batches
(forward passes only, no gradient) is the training-free repair used after
reconstruction-based compression (He et al. 2017; FSKD).
"""
from typing import Iterable

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm


@torch.no_grad()
def recalibrate_batchnorm(model: nn.Module, batches: Iterable[dict],
                          num_batches: int) -> int:
    """Replace every BatchNorm's running mean and variance by their average
    over ``num_batches`` batches of ``batches``.

    Each BN layer's statistics are reset and accumulated with a cumulative
    average (``momentum=None``), so the result is the plain mean over the
    batches of the per-batch statistics, whatever the layer's momentum.
    Gradients are off, so no weight changes; the model's train/eval mode and
    every BN's momentum are restored.

    Args:
        model: an MMEngine model (``data_preprocessor`` and
            ``forward(..., mode='tensor')``, as every mmdet detector).
        batches: an iterable of data batches (e.g. the train dataloader).
        num_batches: how many batches to use, >= 1.

    Returns:
        The number of batches used (fewer when ``batches`` runs out).

    Raises:
        ValueError: ``num_batches`` < 1, the model has no BatchNorm layer, or
            ``batches`` is empty (the statistics are left as they were).
    """
    if isinstance(num_batches, bool) or not isinstance(num_batches, int) or num_batches < 1:
        raise ValueError(f'num_batches must be an int >= 1, got {num_batches!r}')
    norms = [m for m in model.modules() if isinstance(m, _BatchNorm)]
    if not norms:
        raise ValueError(f'{type(model).__name__} has no BatchNorm layer to '
                         f'recalibrate')
    saved = [(m, m.momentum, m.running_mean.clone(), m.running_var.clone(),
              m.num_batches_tracked.clone()) for m in norms]
    training = model.training
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
    model.train()
    used = 0
    try:
        for data in batches:
            if used == num_batches:
                break
            data = model.data_preprocessor(data, training=True)
            model(**data, mode='tensor')
            used += 1
    finally:
        model.train(training)
        for m, momentum, mean, var, count in saved:
            m.momentum = momentum
            if used == 0:
                m.running_mean.copy_(mean)
                m.running_var.copy_(var)
                m.num_batches_tracked.copy_(count)
    if used == 0:
        raise ValueError('no batch to recalibrate BatchNorm on: the data is empty')
    return used
