"""Feature distillation from a frozen dense teacher while an FS model trains.

Channel-wise distillation (CWD; Shu et al., ICCV 2021): for every feature
map the detector's neck (or, without a neck, its backbone) outputs, each
channel's map is turned into a distribution over its H x W positions by a
softmax at temperature tau, for the student and the teacher; the loss is
the KL divergence of the student's from the teacher's, times tau^2, averaged
over images and channels (:func:`channel_wise_divergence`).

:class:`FSDistillationHook` holds the teacher outside the student's module
tree (the student's checkpoints, optimizer and ``train()`` calls never see
it), runs it without gradient in eval mode on the same preprocessed images,
and adds ``loss_cwd`` to the student's loss dict through a forward hook.
mmrazor 1.0.0 would give the same through its distiller but does not import
on torch 2 (its issue #632).
"""
from __future__ import annotations

import os
from typing import List

import torch
import torch.nn.functional as F
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmdet.registry import HOOKS
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


def _features_module(detector: nn.Module) -> nn.Module:
    """The module whose output :meth:`extract_feat` returns: neck or backbone."""
    neck = getattr(detector, 'neck', None)
    return neck if neck is not None else detector.backbone


class _Distiller:
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

        from .tools.convert_checkpoints import load_into
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
        distiller = _Distiller(self.teacher, self.weight, self.tau)
        self._handles = [
            _features_module(model).register_forward_hook(distiller.capture),
            model.register_forward_hook(distiller, with_kwargs=True)]
        runner.logger.info(
            f'FSDistillationHook: teacher {self.teacher_config} '
            f'({self.teacher_checkpoint}) frozen; CWD on '
            f'{"neck" if getattr(model, "neck", None) is not None else "backbone"}'
            f' outputs, weight {self.weight:g}, tau {self.tau:g}')

    def after_train(self, runner) -> None:
        for handle in self._handles:
            handle.remove()
