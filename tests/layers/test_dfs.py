"""Differentiable FSNet (learned filter locations) against explicit loops."""
import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from fsnet_mmdet import DFSSearchHook, FSConv, FSLinear, count_params
from fsnet_mmdet.conversion import check_state_dict
from fsnet_mmdet.layers.dfs import candidate_shifts, relaxed_filters, shift_index
from fsnet_mmdet.layers.index import filter_index
from fsnet_mmdet.layers.wq import decompress, fake_quantize

from conftest import ROOT, build_detector, load_config, run_tool
from references import assert_same_detections, predict, run_test_tool


def grid_starts(geometry):
    """(K, 3) block start of every output channel's grid filter (paper Sec. 2):
    filter (k1, k2, k3) at (k3 z, k1 x, k2 y); with interleave g, channel
    a * g + c holds grid filter c * (K / g) + a."""
    (n1, n2, n3), (x, y, z) = geometry.sampling, geometry.strides
    k, g = geometry.num_filters, geometry.interleave
    starts = torch.empty(k, 3, dtype=torch.long)
    for k1, k2, k3 in itertools.product(range(n1), range(n2), range(n3)):
        p = (k1 * n2 + k2) * n3 + k3
        channel = (p % (k // g)) * g + p // (k // g)
        starts[channel] = torch.tensor([k3 * z, k1 * x, k2 * y])
    return starts


def cut(summary, starts, filter_shape):
    """Filter k = the block of ``filter_shape`` at ``starts[k]``, wrapping."""
    cm, hm, wm = summary.shape
    _, c, s1, s2 = filter_shape
    out = torch.empty(len(starts), c, s1, s2, dtype=summary.dtype)
    for k, (a, b, d) in enumerate(starts.tolist()):
        for ch, i, j in itertools.product(range(c), range(s1), range(s2)):
            out[k, ch, i, j] = summary[(a + ch) % cm, (b + i) % hm, (d + j) % wm]
    return out


def explicit_candidates(shape, radius):
    """Every shift along one axis by 1..radius, either sign, distinct mod shape."""
    found = {(0,) * len(shape)}
    for axis, size in enumerate(shape):
        for d in range(-radius, radius + 1):
            if d % size:
                found.add(tuple(d % size if a == axis else 0
                                for a in range(len(shape))))
    return found


@pytest.mark.parametrize('shape,radius', [((16, 8, 8), 1), ((16, 1, 1), 1),
                                          ((4, 2, 3), 2), ((60,), 3)])
def test_candidate_shifts_are_the_distinct_one_axis_shifts(shape, radius):
    shifts = candidate_shifts(shape, radius)
    assert shifts[0].eq(0).all()
    residues = [tuple(s % n for s, n in zip(row.tolist(), shape)) for row in shifts]
    assert len(set(residues)) == len(residues)  # each location once
    assert set(residues) == explicit_candidates(shape, radius)
    assert shifts.abs().max() <= radius and (shifts.ne(0).sum(1) <= 1).all()


def test_shift_index_moves_each_filter_by_its_offset():
    torch.manual_seed(0)
    layer = FSConv(8, 12, 3, interleave=3)
    geometry, shape = layer.geometry, layer.summary.shape
    offsets = torch.randint(-3, 4, (12, 3))
    moved = shift_index(layer.index, shape, offsets)
    summary = torch.arange(math.prod(shape)).view(shape)
    expected = cut(summary, grid_starts(geometry) + offsets, geometry.filter_shape)
    assert torch.equal(summary.view(-1)[moved.long()], expected)
    assert moved.dtype == layer.index.dtype
    # The grid itself is the blocks at grid_starts (paper Sec. 2).
    assert torch.equal(summary.view(-1)[filter_index(geometry).long()],
                       cut(summary, grid_starts(geometry), geometry.filter_shape))


@pytest.mark.parametrize('cin,cout,ks,opts', [
    (8, 16, 3, {}), (8, 24, 3, {'interleave': 4}), (16, 8, 1, {}),
    (6, 10, 3, {'dfs_radius': 2})])
def test_relaxed_forward_is_the_weighted_sum_of_cut_blocks(cin, cout, ks, opts):
    torch.manual_seed(0)
    opts = dict(dict(dfs_radius=1), **opts)
    layer = FSConv(cin, cout, ks, padding=ks // 2, **opts).double()
    with torch.no_grad():
        layer.dfs_logits.normal_()
    layer.dfs_temperature = 0.7
    probs = torch.softmax(layer.dfs_logits.detach() / 0.7, 1)
    summary, starts = layer.summary.detach(), grid_starts(layer.geometry)
    expected = sum(probs[:, j].view(-1, 1, 1, 1) *
                   cut(summary, starts + shift, layer.geometry.filter_shape)
                   for j, shift in enumerate(layer.dfs_shifts))
    torch.testing.assert_close(layer.filters(), expected)
    torch.testing.assert_close(layer.weight, expected)
    x = torch.randn(2, cin, 7, 7, dtype=torch.double)
    dense = F.conv2d(x, expected, layer.bias, padding=ks // 2)
    torch.testing.assert_close(layer(x), dense)
    torch.testing.assert_close(layer.eval()(x), dense)


def test_gradients_reach_summary_and_logits_finite_differences():
    torch.manual_seed(0)
    layer = FSConv(4, 8, 3, dfs_radius=1, dtype=torch.double)
    index, shifts = layer.index, layer.dfs_shifts

    def filters(summary, logits):
        return relaxed_filters(summary, index, None, shifts,
                               torch.softmax(logits / 0.5, 1))

    summary = torch.randn(layer.summary.shape, dtype=torch.double,
                          requires_grad=True)
    logits = torch.randn(8, len(shifts), dtype=torch.double, requires_grad=True)
    assert torch.autograd.gradcheck(filters, (summary, logits))
    # Through the module, with Eq. 2's sum: both gradients are there.
    layer.grad_reduction = 'sum'
    layer(torch.randn(2, 4, 6, 6, dtype=torch.double)).square().sum().backward()
    assert layer.summary.grad.abs().sum() > 0 and layer.dfs_logits.grad.abs().sum() > 0


def test_mean_reduction_with_a_sure_choice_is_plain_fs_eq2():
    """Logits that pick the grid location for sure: the summary gradient
    (Eq. 2 mean) is the plain FS layer's."""
    torch.manual_seed(0)
    dfs = FSConv(8, 16, 3, padding=1, dfs_radius=1).double()
    plain = FSConv(8, 16, 3, padding=1).double()
    plain.load_state_dict({k: v for k, v in dfs.state_dict().items()
                           if k != 'dfs_logits'})
    with torch.no_grad():
        dfs.dfs_logits[:, 0] = 1e3
    x = torch.randn(2, 8, 6, 6, dtype=torch.double)
    for layer in (dfs, plain):
        layer(x).square().sum().backward()
    torch.testing.assert_close(dfs.summary.grad, plain.summary.grad)


def test_discretize_is_a_plain_fs_layer_at_the_argmax_locations():
    torch.manual_seed(0)
    layer = FSConv(8, 16, 3, padding=1, dfs_radius=1, interleave=2)
    with torch.no_grad():
        layer.dfs_logits.normal_()
    choice = layer.dfs_logits.argmax(1)
    expected_offsets = layer.dfs_shifts[choice]
    offsets = layer.discretize()
    assert torch.equal(offsets.long(), expected_offsets)
    assert offsets.dtype == torch.int8 and not layer.searching
    assert 'dfs_logits' not in dict(layer.named_parameters())
    filters = cut(layer.summary.detach(),
                  grid_starts(layer.geometry) + expected_offsets,
                  layer.geometry.filter_shape)
    x = torch.randn(2, 8, 6, 6)
    torch.testing.assert_close(layer(x), F.conv2d(x, filters, layer.bias, padding=1))
    torch.testing.assert_close(layer.to_conv2d()(x), layer(x))
    # The checkpoint: summary, bias and the int8 location table, no logits.
    state = layer.state_dict()
    assert set(state) == {'summary', 'bias', 'offsets'}
    for fresh in (FSConv(8, 16, 3, padding=1, dfs_radius=1, interleave=2),
                  FSConv(8, 16, 3, padding=1, interleave=2)):
        fresh.load_state_dict(state)
        assert not fresh.searching
        torch.testing.assert_close(fresh(x), layer(x))
    # Offsets loaded into an already discretized layer replace its own.
    again = FSConv(8, 16, 3, padding=1, interleave=2)
    again.discretize(torch.ones(16, 3, dtype=torch.int8))
    again.load_state_dict(state)
    torch.testing.assert_close(again(x), layer(x))


def test_unread_summary_elements_get_no_gradient_and_no_nan():
    torch.manual_seed(0)
    # Four 3x3 blocks tiling a (8, 6, 6) summary; the first moves a row
    # down onto the third: its old first row is read by no filter.
    layer = FSConv(8, 4, 3, padding=1, sampling=(2, 2, 1), strides=(3, 3, 8))
    offsets = torch.zeros(4, 3, dtype=torch.int8)
    offsets[0, 1] = 1
    layer.discretize(offsets)
    count = torch.bincount(layer.index.reshape(-1).long(),
                           minlength=layer.summary.numel())
    assert (count == 0).any()
    layer(torch.randn(2, 8, 6, 6)).sum().backward()
    grad = layer.summary.grad.view(-1)
    assert int((count == 0).sum()) == 8 * 3
    assert torch.isfinite(grad).all() and grad[count == 0].eq(0).all()
    # An initializer's write reaches the read elements, leaves the others.
    before = layer.summary.detach().clone().view(-1)
    torch.nn.init.constant_(layer.weight, 3.0)
    after = layer.summary.detach().view(-1)
    assert after[count > 0].eq(3).all() and torch.equal(after[count == 0],
                                                        before[count == 0])


def test_fslinear_relaxed_and_discretized():
    torch.manual_seed(0)
    layer = FSLinear(20, 6, dfs_radius=2).double()
    with torch.no_grad():
        layer.dfs_logits.normal_()
    length, s = layer.summary.numel(), layer.stride

    def rows(starts):
        return torch.stack([layer.summary.detach()[(int(a) + torch.arange(20)) % length]
                            for a in starts])

    grid = torch.arange(6) * s
    probs = layer.dfs_probs().detach()
    expected = sum(probs[:, j, None] * rows(grid + shift[0])
                   for j, shift in enumerate(layer.dfs_shifts))
    x = torch.randn(3, 20, dtype=torch.double)
    torch.testing.assert_close(layer(x), F.linear(x, expected, layer.bias))
    offsets = layer.discretize().long()
    torch.testing.assert_close(
        layer(x), F.linear(x, rows(grid + offsets[:, 0]), layer.bias))
    plain = FSLinear(20, 6).double()
    plain.load_state_dict(layer.state_dict())
    torch.testing.assert_close(plain(x), layer(x))


def test_wq_load_of_a_discretized_checkpoint():
    torch.manual_seed(0)
    layer = FSConv(8, 16, 3, padding=1, dfs_radius=1)
    with torch.no_grad():
        layer.dfs_logits.normal_()
    layer.discretize()
    wq = FSConv(8, 16, 3, padding=1, dfs_radius=1, wq=True)
    wq.load_state_dict(layer.state_dict())
    assert torch.equal(wq.index, layer.index)
    torch.testing.assert_close(wq.summary, fake_quantize(layer.summary.detach()))


def test_prior_favours_the_grid_location():
    layer = FSConv(8, 16, 3, dfs_radius=1, dfs_prior=2.0)
    probs = layer.dfs_probs()
    torch.testing.assert_close(probs[:, 0], torch.full((16,), math.e ** 2 /
                                                      (math.e ** 2 + 6)))
    layer.dfs_temperature = 0.1
    assert (layer.dfs_probs()[:, 0] > 0.999).all()
    assert layer.discretize().eq(0).all()


def test_counts_logits_while_searching_and_the_int8_table_after():
    layer = FSConv(8, 16, 3, dfs_radius=1)
    summary = layer.summary.numel()
    searching = count_params(layer)
    assert searching.stored == summary + 16 + 16 * 7
    assert searching.bits == 32 * searching.stored
    layer.discretize()
    report = count_params(layer)
    assert report.stored == summary + 16 + math.ceil(16 * 3 / 4)
    assert report.bits == 32 * (summary + 16) + 8 * 16 * 3  # the int8 table
    assert report.layers[0].stored == report.stored
    assert report.effective_wq == report.stored - summary + summary / 4


def test_bad_dfs_options_and_states():
    with pytest.raises(ValueError, match='dfs_radius must be an int >= 0'):
        FSConv(8, 16, 3, dfs_radius=-1)
    with pytest.raises(ValueError, match='dfs_prior must be a finite number'):
        FSConv(8, 16, 3, dfs_radius=1, dfs_prior='2')
    with pytest.raises(ValueError, match='not searching'):
        FSConv(8, 16, 3).discretize()
    with pytest.raises(ValueError, match=r'offsets must have shape .* \(16, 3\)'):
        FSConv(8, 16, 3).discretize(torch.zeros(16, 1, dtype=torch.int8))
    searching = FSConv(8, 16, 3, dfs_radius=1)
    with pytest.raises(ValueError, match='from a DFSNet search'):
        FSConv(8, 16, 3).load_state_dict(searching.state_dict())
    with pytest.raises(ValueError, match='search_iters must be'):
        DFSSearchHook(search_iters=1.5)
    with pytest.raises(ValueError, match='temperature must be'):
        DFSSearchHook(temperature=(1.0, 0.0))


def test_check_state_dict_takes_a_discretized_checkpoint():
    model = torch.nn.Sequential(FSConv(8, 16, 3, dfs_radius=1))
    state = {k: v.clone() for k, v in model.state_dict().items()}
    model[0].discretize()
    discretized = model.state_dict()
    fresh = torch.nn.Sequential(FSConv(8, 16, 3, dfs_radius=1))
    check_state_dict(fresh, discretized, 'ckpt.pth')  # no error
    check_state_dict(fresh, state, 'ckpt.pth')
    wrong = dict(discretized, **{'0.offsets': torch.zeros(16, 1)})
    with pytest.raises(ValueError, match="'0.offsets' has shape"):
        check_state_dict(fresh, wrong, 'ckpt.pth')


@pytest.mark.parametrize('config', ['configs/dfsnet_ssd300_voc.py',
                                    'configs/demo/dfsnet_ssd300_demo.py'])
def test_dfs_configs_build_searching_models(config):
    from fsnet_mmdet.layers.summary import SummaryWeightMixin

    cfg = load_config(ROOT / config)
    layers = [m for m in build_detector(cfg).modules()
              if isinstance(m, SummaryWeightMixin)]
    assert len(layers) == 35 and all(m.searching for m in layers)
    assert any(h['type'] == 'DFSSearchHook' for h in cfg.custom_hooks)
    assert cfg.optim_wrapper.paramwise_cfg.custom_keys['dfs_logits'].decay_mult == 0


@pytest.mark.e2e(seconds=85)
def test_train_searches_then_discretizes_and_the_checkpoint_tests(tmp_path):
    """tools/train.py with the search hook: the last checkpoint holds the
    location tables, no logits; tools/test.py and quantize take it."""
    config = ROOT / 'tests' / 'configs' / 'dfsnet_ssd300_tiny.py'
    result = run_tool('tools/train.py', config, '--work-dir', tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    log = result.stdout + result.stderr
    assert 'DFSNet: iteration 1: 35 layers discretized' in log
    assert 'dfs_temperature: 1.0000' in log
    state = torch.load(tmp_path / 'epoch_2.pth', weights_only=False)['state_dict']
    assert not any(k.endswith('dfs_logits') for k in state)
    assert sum(k.endswith('.offsets') for k in state) == 35
    first = torch.load(tmp_path / 'epoch_1.pth', weights_only=False)['state_dict']
    assert sum(k.endswith('dfs_logits') for k in first) == 35
    # tools/test.py: the detections of the config's model holding the
    # checkpoint's state dict (location tables included), predicted here.
    _, theirs = run_test_tool(config, tmp_path / 'epoch_2.pth', tmp_path / 'test')
    cfg = load_config(config)
    model = build_detector(cfg)
    assert all(m.searching for m in model.modules() if isinstance(m, FSConv))
    model.load_state_dict(state, strict=True)
    layers = [m for m in model.modules() if isinstance(m, FSConv)]
    assert len(layers) == 35 and not any(m.searching for m in layers)
    assert_same_detections(predict(model, cfg), theirs)
    # tools/quantize.py: 8-bit summaries, the location tables as they were.
    result = run_tool('tools/quantize.py', config, tmp_path / 'epoch_2.pth',
                      tmp_path / 'wq.pth')
    assert result.returncode == 0, result.stderr[-3000:]
    wq = decompress(torch.load(tmp_path / 'wq.pth', weights_only=True))['state_dict']
    assert set(wq) == set(state)
    for key, value in state.items():
        expected = fake_quantize(value) if key.endswith('.summary') else value
        assert torch.equal(wq[key], expected), key
    # Resuming from the searching checkpoint finishes the search the same way.
    result = run_tool('tools/train.py', config, '--work-dir', tmp_path / 'r',
                      '--resume', tmp_path / 'epoch_1.pth')
    assert result.returncode == 0, result.stderr[-3000:]
    assert 'DFSNet: iteration 1: 35 layers discretized' in result.stdout + result.stderr
