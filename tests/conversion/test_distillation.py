"""Channel-wise distillation from a frozen teacher: the loss and the hook."""
import math
import types

import pytest
import torch
from torch import nn

from conftest import ROOT, build_detector, load_config, voc_batch
from fsnet_mmdet.conversion.distillation import channel_wise_divergence
from fsnet_mmdet.engine.hooks import FSDistillationHook

TESTS = ROOT / 'tests' / 'configs'


def test_cwd_matches_an_explicit_loop():
    torch.manual_seed(0)
    s, t = torch.randn(2, 3, 4, 5, dtype=torch.float64), torch.randn(
        2, 3, 4, 5, dtype=torch.float64)
    tau = 2.0
    total = 0.0
    for n in range(2):
        for c in range(3):
            ps = [math.exp(v / tau) for v in s[n, c].reshape(-1).tolist()]
            pt = [math.exp(v / tau) for v in t[n, c].reshape(-1).tolist()]
            zs, zt = sum(ps), sum(pt)
            total += sum(b / zt * math.log((b / zt) / (a / zs))
                         for a, b in zip(ps, pt))
    expected = total * tau ** 2 / 6
    assert float(channel_wise_divergence(s, t, tau)) == pytest.approx(expected,
                                                                      rel=1e-10)
    assert float(channel_wise_divergence(t, t, tau)) == pytest.approx(0, abs=1e-12)
    with pytest.raises(ValueError, match='differ in shape'):
        channel_wise_divergence(s, t[:, :2])


@pytest.fixture(scope='module')
def teacher_files(tmp_path_factory):
    """A dense tiny SSD300-BN config and a checkpoint of it."""
    from mmengine.registry import init_default_scope
    init_default_scope('mmdet')
    cfg = load_config(TESTS / 'ssd300_bn_tiny.py')
    model = build_detector(cfg)
    path = tmp_path_factory.mktemp('teacher') / 'teacher.pth'
    torch.save(dict(state_dict=model.state_dict()), path)
    return str(TESTS / 'ssd300_bn_tiny.py'), str(path), model


def test_teacher_is_loaded_strictly_and_frozen(teacher_files):
    config, checkpoint, reference = teacher_files
    hook = FSDistillationHook(config, checkpoint)
    teacher = hook.build_teacher()
    assert not teacher.training
    assert not any(p.requires_grad for p in teacher.parameters())
    for key, value in reference.state_dict().items():
        torch.testing.assert_close(teacher.state_dict()[key], value)
    fs_config = str(TESTS / 'fsnet_ssd300_tiny.py')
    with pytest.raises(ValueError, match='teacher checkpoint does not fit '
                       'teacher_config'):
        FSDistillationHook(fs_config, checkpoint).build_teacher()


@pytest.mark.parametrize('kwargs, match', [
    (dict(teacher_checkpoint='missing.pth'), "teacher_checkpoint 'missing.pth' "
     'does not exist'),
    (dict(weight=0), 'weight must be a positive number'),
    (dict(tau=-1.0), 'tau must be a positive number'),
])
def test_options_are_checked(teacher_files, kwargs, match):
    config, checkpoint, _ = teacher_files
    options = dict(dict(teacher_config=config, teacher_checkpoint=checkpoint),
                   **kwargs)
    with pytest.raises(ValueError, match=match):
        FSDistillationHook(**options)


def test_hook_adds_the_loss_and_leaves_the_teacher_untouched(teacher_files):
    """Student = FSNet-1 tiny: loss_cwd = sum over the neck's levels of CWD
    against the teacher's features; the teacher gets no gradient, its BN
    statistics do not move, the student's state dict has no teacher key."""
    config, checkpoint, _ = teacher_files
    student = build_detector(load_config(TESTS / 'fsnet_ssd300_tiny.py'))
    keys = set(student.state_dict())
    hook = FSDistillationHook(config, checkpoint, weight=2.0)
    runner = types.SimpleNamespace(model=student, logger=types.SimpleNamespace(
        info=lambda msg: None))
    hook.before_train(runner)
    student.train()
    before = {k: v.clone() for k, v in hook.teacher.state_dict().items()}
    data = student.data_preprocessor(voc_batch(load_config(
        TESTS / 'fsnet_ssd300_tiny.py').test_pipeline), training=True)
    losses = student(**data, mode='loss')
    with torch.no_grad():
        expected = 2.0 * sum(
            channel_wise_divergence(s, t) for s, t in zip(
                student.extract_feat(data['inputs']),
                hook.teacher.extract_feat(data['inputs'])))
    assert losses['loss_cwd'].item() == pytest.approx(expected.item(), rel=1e-4)
    assert losses['loss_cwd'].item() > 0
    losses['loss_cwd'].backward()
    assert all(p.grad is None for p in hook.teacher.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0
               for p in student.neck.parameters())
    assert not hook.teacher.training
    for key, value in hook.teacher.state_dict().items():
        assert torch.equal(value, before[key]), key
    assert set(student.state_dict()) == keys
    hook.after_train(runner)
    assert 'loss_cwd' not in student(**data, mode='loss')
