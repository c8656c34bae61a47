"""Structural regularization towards FS: the term, its gradient, the hook, the tools."""
import json
import types

import pytest
import torch
from torch import nn

from conftest import ROOT, build_detector, load_config, run_tool
from references import (assert_projected, assert_same_detections, fs_layers,
                        group_means, predict, projection_residual_loop,
                        run_test_tool)
from fsnet_mmdet import FSConv, FSLinear
from fsnet_mmdet.layers.wq import fake_quantize
from fsnet_mmdet.conversion.regularization import (
    StructuralRegularizer, fs_target_layers, lambda_at, projection_residual,
    shrink_towards_fs)
from fsnet_mmdet.engine.hooks import FSRegularizationHook, check_loaded

TESTS = ROOT / 'tests' / 'configs'


def pair():
    """A dense model and its FS twin (same module names)."""
    torch.manual_seed(0)
    dense = nn.Sequential(nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16),
                          nn.ReLU(), nn.Conv2d(16, 16, 3, padding=1),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10))
    fs = nn.Sequential(FSConv(8, 16, 3, padding=1, interleave=4),
                       nn.BatchNorm2d(16), nn.ReLU(),
                       FSConv(16, 16, 3, padding=1), nn.AdaptiveAvgPool2d(1),
                       nn.Flatten(), FSLinear(16, 10, stride=3))
    return dense, fs


@pytest.mark.parametrize('make', [lambda: FSConv(8, 16, 3, interleave=4),
                                  lambda: FSConv(8, 12, 1),
                                  lambda: FSLinear(16, 10, stride=3)])
def test_residual_and_gradient_match_an_explicit_computation(make):
    layer = make()
    weight = torch.randn(layer.index.shape, dtype=torch.float64, requires_grad=True)
    error, norm = projection_residual(weight, layer.index, layer.summary.numel())
    assert error.item() == pytest.approx(
        projection_residual_loop(weight.detach(), layer.index), rel=1e-10)
    assert norm.item() == pytest.approx(float(weight.detach().pow(2).sum()))
    (error / norm).backward()
    # d/dW ||W-PW||^2/||W||^2 = 2(W-PW)/||W||^2 - 2||W-PW||^2 W/||W||^4 (P is
    # an orthogonal projection), PW from the explicit group means.
    w = weight.detach()
    pw = torch.empty_like(w).reshape(-1)
    flat_index = layer.index.reshape(-1)
    for element in flat_index.unique():
        mask = flat_index == element
        pw[mask] = w.reshape(-1)[mask].mean()
    pw = pw.view_as(w)
    e, n = error.item(), norm.item()
    expected = 2 * (w - pw) / n - 2 * e * w / n ** 2
    torch.testing.assert_close(weight.grad, expected)


def test_residual_is_zero_exactly_on_fs_weights():
    layer = FSConv(8, 16, 3, interleave=4)
    error, _ = projection_residual(layer.weight, layer.index, layer.summary.numel())
    assert float(error) < 1e-10


def test_regularizer_adds_the_weighted_sum_in_loss_mode_only():
    dense, fs = pair()
    layers = fs_target_layers(fs, dense)
    assert list(layers) == ['0', '3', '6']

    class Detector(nn.Module):  # mmdet's forward(inputs, mode=...) contract
        def __init__(self):
            super().__init__()
            self.net = dense

        def forward(self, x, mode='loss'):
            out = self.net(x)
            return dict(loss_task=out.square().mean()) if mode == 'loss' else out

    model = Detector()
    layers = {f'net.{k}': v for k, v in layers.items()}
    reg = StructuralRegularizer(layers, lam=0.5)
    model.register_forward_hook(reg, with_kwargs=True)
    out = model(torch.randn(2, 8, 5, 5), mode='loss')
    expected = sum(
        projection_residual_loop(dense[i].weight.detach(), fs[i].index)
        / float(dense[i].weight.detach().pow(2).sum()) for i in (0, 3, 6))
    assert out['loss_fs_reg'].item() == pytest.approx(0.5 * expected, rel=1e-5)
    assert set(reg.residuals) == set(layers)
    assert 0 < float(out['fs_residual']) < 1
    out['loss_fs_reg'].backward()
    assert dense[0].weight.grad is not None and dense[1].weight.grad is None
    assert torch.is_tensor(model(torch.randn(2, 8, 5, 5), mode='predict'))
    model.eval()
    assert 'loss_fs_reg' not in model(torch.randn(2, 8, 5, 5), mode='loss')


def test_minimizing_the_term_makes_the_projection_lossless():
    """The regularizer's fixed point is an FS weight: projecting it changes
    nothing the network computes."""
    dense, fs = pair()
    reg = StructuralRegularizer(fs_target_layers(fs, dense), lam=1.0)
    opt = torch.optim.Adam(dense.parameters(), lr=1e-2)
    start = float(reg.loss(dense)[1])
    for _ in range(300):
        opt.zero_grad()
        reg.loss(dense)[0].backward()
        opt.step()
    assert start > 0.5 and float(reg.loss(dense)[1]) < 1e-3
    fs.load_state_dict(dense.state_dict())  # the projection
    x = torch.randn(3, 8, 6, 6)
    dense.eval(), fs.eval()
    torch.testing.assert_close(fs(x), dense(x), atol=1e-3, rtol=1e-3)


def test_shrinking_scales_the_residual_by_one_minus_the_rate():
    layer = FSConv(8, 16, 3, interleave=4)
    numel = layer.summary.numel()
    weight = torch.randn(layer.index.shape, dtype=torch.float64)
    before = projection_residual(weight, layer.index, numel)[0].item()
    projected = weight.clone()
    shrink_towards_fs(projected, layer.index, numel, 1.0)
    # Rate 1: every weight the mean of its group (an explicit loop).
    expected = group_means(weight, layer.index, numel)[layer.index.long()]
    torch.testing.assert_close(projected, expected)
    shrink_towards_fs(weight, layer.index, numel, 0.25)
    after = projection_residual(weight, layer.index, numel)[0].item()
    assert after == pytest.approx(0.75 ** 2 * before, rel=1e-9)
    assert projection_residual_loop(weight, layer.index) == pytest.approx(
        after, rel=1e-9)
    # The group means of the shrunk weight are unchanged (P is idempotent).
    torch.testing.assert_close(
        group_means(weight, layer.index, numel)[layer.index.long()], expected)


def test_target_layers_errors_name_the_problem():
    dense, fs = pair()
    with pytest.raises(ValueError, match=r"include pattern 'head\.\*' matches no "
                       r"FS layer of the target"):
        fs_target_layers(fs, dense, include=['head.*'])
    assert list(fs_target_layers(fs, dense, include='6')) == ['6']
    dense[3] = nn.Conv2d(16, 16, 1)
    with pytest.raises(ValueError, match=r"target FS layer 3 needs a dense layer "
                       r"of the same name with a weight of shape \(16, 16, 3, 3\)"):
        fs_target_layers(fs, dense)
    with pytest.raises(ValueError, match='has no FS layer'):
        fs_target_layers(dense, dense)
    searching = nn.Sequential(FSConv(8, 16, 3, dfs_radius=1))
    with pytest.raises(ValueError, match='DFSNet search'):
        fs_target_layers(searching, nn.Sequential(nn.Conv2d(8, 16, 3)))


def test_lambda_ramps_geometrically_then_holds():
    assert lambda_at(0, (0.1, 10.0), 100) == pytest.approx(0.1)
    assert lambda_at(50, (0.1, 10.0), 100) == pytest.approx(1.0)
    assert lambda_at(100, (0.1, 10.0), 100) == lambda_at(500, (0.1, 10.0), 100) == 10.0
    assert lambda_at(0, (0.1, 10.0), 0) == 10.0


@pytest.mark.parametrize('kwargs, match', [
    (dict(lam=(1.0, )), r'lam must be \(start, end\)'),
    (dict(lam=(0.0, 1.0)), r'lam must be \(start, end\), two positive'),
    (dict(lam=(1.0, float('inf'))), 'two positive finite'),
    (dict(shrink=(0.1, 1.5)), r'shrink must be \(start, end\), two numbers in '
     r'\(0, 1\]'),
    (dict(lam=None), 'give lam .*, shrink .* or both'),
    (dict(ramp_iters=-1), 'ramp_iters must be an int >= 0 or a float in'),
    (dict(ramp_iters=1.5), 'ramp_iters must be'),
    (dict(log_interval=0), 'log_interval must be an int >= 1'),
    (dict(target='no/such/config.py'), "target config 'no/such/config.py' does "
     'not exist'),
])
def test_hook_options_are_checked(kwargs, match):
    options = dict(dict(target=str(TESTS / 'fsnet_ssd300_tiny.py')), **kwargs)
    with pytest.raises(ValueError, match=match):
        FSRegularizationHook(**options)


def test_a_ramp_past_the_end_of_training_is_refused_before_training():
    hook = FSRegularizationHook(target=str(TESTS / 'fsnet_ssd300_tiny.py'),
                                ramp_iters=20)
    runner = types.SimpleNamespace(max_iters=10)
    with pytest.raises(ValueError, match=r'the ramp \(ramp_iters=20\) lasts '
                       r'20 iterations, past the end of training \(max_iters=10\)'):
        hook.before_train(runner)


def test_load_from_must_fit_the_model_exactly(tmp_path):
    dense, _ = pair()
    state = dense.state_dict()
    path = tmp_path / 'ok.pth'
    torch.save(dict(state_dict=state), path)
    check_loaded(types.SimpleNamespace(_load_from=str(path), _resume=False), dense)
    del state['3.weight']
    state['7.weight'] = torch.zeros(1)
    torch.save(dict(state_dict=state), tmp_path / 'bad.pth')
    runner = types.SimpleNamespace(_load_from=str(tmp_path / 'bad.pth'),
                                   _resume=False)
    with pytest.raises(ValueError, match=r"does not fit the model being "
                       r"regularized .* missing \['3.weight'\], unexpected "
                       r"\['7.weight'\]"):
        check_loaded(runner, dense)


@pytest.mark.e2e(seconds=75)
def test_tools_train_regularize_convert_test_quantize(tmp_path):
    """tools/train.py (dense) -> train.py with the hook -> convert.py ->
    test.py -> quantize.py -> test.py (WQ) on the shared VOC images."""
    dense = tmp_path / 'dense'
    result = run_tool('tools/train.py', TESTS / 'ssd300_bn_tiny.py', '--work-dir', dense)
    assert result.returncode == 0, result.stderr[-3000:]
    reg = tmp_path / 'reg'
    result = run_tool('tools/train.py', TESTS / 'fsreg_ssd300_tiny.py', '--work-dir',
                      reg, '--cfg-options', f'load_from={dense / "epoch_1.pth"}')
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-3000:]
    assert 'FSRegularizationHook: 35 layers regularized' in log
    assert 'loss_fs_reg' in log and 'fs_residual' in log and 'fs_reg_lambda' in log
    history = json.loads((reg / 'fs_residuals.json').read_text())['history']
    assert [h['iter'] for h in history] == [1, 2]
    assert [h['lam'] for h in history] == [1.0, 10.0]
    assert [h['shrink'] for h in history] == [0.5, 0.5]
    final = json.loads((reg / 'fs_residuals.json').read_text())['final']
    # Each iteration: an SGD step on a barely trained model (large task
    # gradients move the weights off the subspace), then a shrink by half
    # (exact in test_shrinking_scales_the_residual_by_one_minus_the_rate).
    assert final['total'] < history[1]['total'] < history[0]['total']
    assert len(history[-1]['layers']) == 35
    assert all(0 < r < 1 for r in history[-1]['layers'].values())
    projected = tmp_path / 'fs.pth'
    fs_config = TESTS / 'fsnet_ssd300_tiny.py'
    result = run_tool('tools/convert.py', fs_config, reg / 'epoch_2.pth', projected)
    assert result.returncode == 0, result.stderr[-3000:]
    # The converted file: every summary the group mean of the regularized
    # dense weights, element by element; the rest as it was.
    cfg = load_config(fs_config)
    fs = build_detector(cfg)
    dense_state = torch.load(reg / 'epoch_2.pth', weights_only=False)['state_dict']
    fs_state = torch.load(projected, weights_only=True)['state_dict']
    assert assert_projected(fs, dense_state, fs_state, loop_limit=600_000) == 35
    fs.load_state_dict(fs_state, strict=True)
    # tools/test.py on it: the detections of that FS model, predicted here.
    _, theirs = run_test_tool(fs_config, projected, tmp_path / 'test')
    assert_same_detections(predict(fs, cfg), theirs)
    wq = tmp_path / 'wq.pth'
    result = run_tool('tools/quantize.py', fs_config, projected, wq)
    assert result.returncode == 0, result.stderr[-3000:]
    # WQ: those of the same model, its summaries quantized here.
    _, theirs = run_test_tool(TESTS / 'fsnet_ssd300_wq_tiny.py', wq,
                              tmp_path / 'test_wq')
    with torch.no_grad():
        for layer in fs_layers(fs).values():
            layer.summary.copy_(fake_quantize(layer.summary))
    assert_same_detections(predict(fs, cfg), theirs)

    # A trained model that does not fit the config: stopped before training.
    result = run_tool('tools/train.py', TESTS / 'fsreg_ssd300_tiny.py', '--work-dir',
                      tmp_path / 'bad', '--cfg-options', f'load_from={projected}')
    assert result.returncode != 0
    assert 'does not fit the model being regularized' in result.stderr
    assert not list((tmp_path / 'bad').glob('*.pth'))


def test_demo_configs_pair_up(tmp_path, monkeypatch):
    """configs/demo: the dense model regularized towards the FS demo model
    has a dense twin for every FS layer; the hook and both configs check."""
    from mmdet.registry import HOOKS
    from conftest import VOC_ROOT
    from fsnet_mmdet.engine.validate import check_config

    # The demo's generated data is not in a fresh clone: its relative
    # data_root resolves to the shipped VOC files instead.
    (tmp_path / 'data' / 'demo').mkdir(parents=True)
    (tmp_path / 'data' / 'demo' / 'VOCdevkit').symlink_to(VOC_ROOT)
    monkeypatch.chdir(tmp_path)
    demo = ROOT / 'configs' / 'demo'
    for name in ('ssd300_bn_demo.py', 'fsreg_ssd300_demo.py',
                 'fsnet_ssd300_demo_from_dense.py'):
        check_config(load_config(demo / name), name, training=True)
    cfg = load_config(demo / 'fsreg_ssd300_demo.py')
    spec = next(h for h in cfg.custom_hooks if h['type'] == 'FSRegularizationHook')
    hook = HOOKS.build(dict(spec, target=str(ROOT / spec['target'])))
    layers = fs_target_layers(hook._target_model(), build_detector(cfg))
    assert len(layers) == 35
