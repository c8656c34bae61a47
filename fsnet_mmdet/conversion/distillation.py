"""Feature distillation from a frozen dense teacher while an FS model trains.

Channel-wise distillation (CWD; Shu et al., ICCV 2021): for every feature
map the detector's neck (or, without a neck, its backbone) outputs, each
channel's map is turned into a distribution over its H x W positions by a
softmax at temperature tau, for the student and the teacher; the loss is
the KL divergence of the student's from the teacher's, times tau^2, averaged
over images and channels (:func:`channel_wise_divergence`).

:class:`~fsnet_mmdet.engine.hooks.FSDistillationHook` holds the teacher outside the student's module
tree (the student's checkpoints, optimizer and ``train()`` calls never see
it), runs it without gradient in eval mode on the same preprocessed images,
and adds ``loss_cwd`` to the student's loss dict through a forward hook.
mmrazor 1.0.0 would give the same through its distiller but does not import
on torch 2 (its issue #632).
"""
from __future__ import annotations

from typing import List

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def channel_wise_divergence(student: Tensor, teacher: Tensor,
                            tau: float = 1.0) -> Tensor:
    """CWD loss of one feature map.

    Args:
        student: (N, C, H, W) student features.
        teacher: (N, C, H, W) teacher features (no gradient needed).
        tau: softmax temperature, > 0.

    Returns:
        ``tau^2 / (N C) * sum_{n,c} KL(softmax(T_nc / tau) || softmax(S_nc / tau))``,
        the softmax over the H x W positions of one channel.
    """
    if student.shape != teacher.shape:
        raise ValueError(f'student and teacher feature maps differ in shape: '
                         f'{tuple(student.shape)} vs {tuple(teacher.shape)}')
    n, c = student.shape[:2]
    s = F.log_softmax(student.reshape(n * c, -1) / tau, dim=1)
    t = F.log_softmax(teacher.reshape(n * c, -1) / tau, dim=1)
    return (t.exp() * (t - s)).sum() * tau ** 2 / (n * c)


def features_module(detector: nn.Module) -> nn.Module:
    """The module whose output :meth:`extract_feat` returns: neck or backbone."""
    neck = getattr(detector, 'neck', None)
    return neck if neck is not None else detector.backbone


class Distiller:
    """Forward hooks on the student: capture its features, add ``loss_cwd``.

    Holds the teacher as a plain attribute, outside the student's modules.
    """

    def __init__(self, teacher: nn.Module, weight: float, tau: float) -> None:
        self.teacher, self.weight, self.tau = teacher, weight, tau
        self.features: List[Tensor] = []

    def capture(self, module, args, output) -> None:
        self.features = [output] if isinstance(output, Tensor) else list(output)

    def __call__(self, module: nn.Module, args, kwargs, output):
        if not (module.training and kwargs.get('mode') == 'loss'
                and isinstance(output, dict)):
            return output
        inputs = kwargs['inputs'] if 'inputs' in kwargs else args[0]
        with torch.no_grad():
            teacher = self.teacher.extract_feat(inputs)
        teacher = [teacher] if isinstance(teacher, Tensor) else list(teacher)
        if len(teacher) != len(self.features):
            raise ValueError(f'FSDistillationHook: the teacher gives '
                             f'{len(teacher)} feature maps, the student '
                             f'{len(self.features)}')
        loss = sum(channel_wise_divergence(s, t, self.tau)
                   for s, t in zip(self.features, teacher))
        output = dict(output)
        output['loss_cwd'] = loss * self.weight
        return output
