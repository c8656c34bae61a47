"""Function-preserving channel permutations before the FS projection."""
import pytest
import torch
from torch import nn

from conftest import (TINY_CONFIG, ROOT, build_detector, load_config, run_tool,
                      voc_batch)
from fsnet_mmdet import FSConv
from fsnet_mmdet.conversion.permutation import (_Term, apply_permutation,
                                                fs_order, permute_for_fs,
                                                trace_channel_spaces)
from references import assert_projected, projection_residual_loop


class Net(nn.Module):
    """conv-BN-ReLU-pool-conv-BN-ReLU, then two convs reading the same
    channels (a branch), and a residual add the hooks cannot see."""

    def __init__(self, conv=nn.Conv2d):
        super().__init__()
        self.a = conv(3, 8, 3, padding=1)
        self.bn_a = nn.BatchNorm2d(8)
        self.pool = nn.MaxPool2d(2)
        self.b = conv(8, 16, 3, padding=1)
        self.bn_b = nn.BatchNorm2d(16)
        self.relu = nn.ReLU(inplace=True)
        self.out1 = conv(16, 4, 3, padding=1)
        self.out2 = conv(16, 6, 1)
        self.r = conv(6, 6, 1)  # residual branch: r(x) + x

    def forward(self, inputs, mode='tensor'):
        x = self.pool(torch.relu_(self.bn_a(self.a(inputs))))
        x = self.relu(self.bn_b(self.b(x)))
        y = self.out2(x)
        return self.out1(x), self.r(y) + y


def randomized(net):
    torch.manual_seed(0)
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-1, 1), m.running_var.uniform_(0.5, 2)
            m.weight.data.uniform_(0.5, 2), m.bias.data.uniform_(-1, 1)
    return net.eval()


def test_trace_finds_the_spaces_and_blocks_what_it_cannot_follow():
    net = randomized(Net())
    spaces = {s.producer: s for s in trace_channel_spaces(net, torch.randn(1, 3, 8, 8))}
    assert list(spaces) == ['a', 'b', 'out2', 'out1', 'r']
    assert spaces['a'].followers == ['bn_a'] and spaces['a'].consumers == ['b']
    assert not spaces['a'].blocked
    assert spaces['b'].followers == ['bn_b']
    assert spaces['b'].consumers == ['out2', 'out1'] and not spaces['b'].blocked
    assert spaces['out1'].blocked == 'an output of the network'
    assert spaces['r'].blocked == 'read by no conv the trace follows'
    # out2 feeds r (seen) and the add (unseen): only the output check finds it.
    assert not spaces['out2'].blocked


def test_apply_permutation_preserves_the_function():
    net = randomized(Net())
    x = torch.randn(2, 3, 8, 8)
    before = net(x)
    spaces = {s.producer: s for s in trace_channel_spaces(net, x)}
    apply_permutation(net, spaces['a'], torch.randperm(8))
    apply_permutation(net, spaces['b'], torch.randperm(16))
    for y0, y1 in zip(before, net(x)):
        torch.testing.assert_close(y1, y0)
    # The residual branch's channels are joined outside modules.
    apply_permutation(net, spaces['out2'], torch.tensor([1, 0, 2, 3, 4, 5]))
    assert not torch.allclose(net(x)[1], before[1])


def kept(weight, index, numel):
    """1 - ||W - P(W)||^2 / ||W||^2, the residual by an explicit loop over
    the groups of weights sharing a summary element (of the ``numel``)."""
    assert int(index.max()) < numel
    return 1 - (projection_residual_loop(weight, index)
                / float(weight.pow(2).sum()))


def test_swap_gains_are_exact():
    """Every scored swap's gain equals the change of the kept fraction
    computed from scratch (the projection of the swapped weight)."""
    torch.manual_seed(0)
    layer = FSConv(8, 16, 3)
    numel = layer.summary.numel()
    weight = torch.randn(16, 8, 3, 3, dtype=torch.float64)
    for axis in (0, 1):
        term = _Term.of(weight, layer.index, numel, axis)
        assert abs(term.kept() - kept(weight, layer.index, numel)) < 1e-12
        n = weight.shape[axis]
        p = torch.tensor([0, 3, 5, n - 1])
        q = torch.tensor([1, 4, 2, 0])
        _, _, gain = term.swap_deltas(p, q)
        for i, j, g in zip(p.tolist(), q.tolist(), gain.tolist()):
            order = torch.arange(n)
            order[[i, j]] = order[[j, i]]
            swapped = weight.index_select(axis, order)
            expected = kept(swapped, layer.index, numel) - term.kept()
            assert abs(g - expected) < 1e-12


def test_fs_order_raises_the_kept_fraction_it_reports():
    torch.manual_seed(0)
    producer, consumer = FSConv(8, 16, 3), FSConv(16, 12, 3)
    w1 = torch.randn(16, 8, 3, 3, dtype=torch.float64)
    w2 = torch.randn(12, 16, 3, 3, dtype=torch.float64)
    terms = [_Term.of(w1, producer.index, producer.summary.numel(), 0),
             _Term.of(w2, consumer.index, consumer.summary.numel(), 1)]
    perm, before, after = fs_order(terms, 16, steps=40, batch=16,
                                   generator=torch.Generator().manual_seed(0))
    assert sorted(perm.tolist()) == list(range(16))
    assert after > before
    expected = (kept(w1[perm], producer.index, producer.summary.numel()) +
                kept(w2[:, perm], consumer.index, consumer.summary.numel()))
    assert abs(after - expected) < 1e-9
    assert abs(before - kept(w1, producer.index, producer.summary.numel()) -
               kept(w2, consumer.index, consumer.summary.numel())) < 1e-9


def test_permute_for_fs_keeps_the_function_and_lowers_the_projection_error():
    dense, fs = randomized(Net()), Net(FSConv)
    x = torch.randn(2, 3, 8, 8)
    before = dense(x)
    fs_layers = dict(fs.named_modules())

    def total_kept():
        return sum(kept(dense.get_submodule(n).weight.detach().double(),
                        fs_layers[n].index, fs_layers[n].summary.numel())
                   for n in ('a', 'b', 'out1'))

    start = total_kept()
    report = {s.producer: (s, b, a) for s, b, a in
              permute_for_fs(dense, fs, x, steps=30, batch=16)}
    for y0, y1 in zip(before, dense(x)):
        torch.testing.assert_close(y1, y0)
    assert report['out2'][0].blocked == 'joined to other channels outside modules'
    assert report['out1'][0].blocked
    for name in ('a', 'b'):
        assert report[name][2] > report[name][1]
    assert total_kept() > start


@pytest.mark.e2e
def test_convert_tool_permutes_before_projecting(tmp_path):
    """tools/convert.py --permute on the tiny SSD300: a lower total
    projection error than without it; each channel space's permutation, read
    back from the file's BatchNorm statistics, leaves the dense detector's
    outputs as they were, and the file is the projection of the dense
    weights so permuted."""
    from fsnet_mmdet.compression.lrf import ssd300_channel_groups
    torch.manual_seed(0)
    dense_cfg = load_config(ROOT / 'tests' / 'configs' / 'ssd300_bn_tiny.py')
    dense = build_detector(dense_cfg)
    with torch.no_grad():  # distinct per channel: the order can be read back
        for m in dense.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1), m.running_var.uniform_(0.5, 2)
    ckpt = tmp_path / 'dense.pth'
    torch.save({'state_dict': dense.state_dict(), 'meta': {}}, ckpt)

    def total(out, *extra):
        result = run_tool('tools/convert.py', TINY_CONFIG, ckpt, out, *extra)
        assert result.returncode == 0, result.stderr
        line = next(l for l in result.stdout.splitlines() if 'all of them' in l)
        return float(line.rsplit(':', 1)[1]), result.stdout

    plain, _ = total(tmp_path / 'plain.pth')
    permuted, stdout = total(tmp_path / 'permuted.pth', '--permute', '5')
    assert 'left alone: an output of the network' in stdout
    assert permuted < plain

    # Each channel space of SSD300 (LRF's hand-written table): its order
    # from the BatchNorm's running mean, applied here by indexing to the
    # producer's filters, the BatchNorm, the L2Norm and every consumer.
    fs_state = torch.load(tmp_path / 'permuted.pth', weights_only=True)['state_dict']
    source = dense.state_dict()
    state = dict(source)
    moved = 0
    for group in ssd300_channel_groups(dense):
        before = source[f'{group.norm}.running_mean']
        after = fs_state[f'{group.norm}.running_mean']
        perm = (after[:, None] == before[None, :]).int().argmax(1)
        assert torch.equal(before[perm], after), group.producer
        assert sorted(perm.tolist()) == list(range(len(perm)))
        moved += not torch.equal(perm, torch.arange(len(perm)))
        rows = [f'{group.producer}.bias'] + [
            f'{group.norm}.{k}' for k in ('weight', 'bias', 'running_mean',
                                          'running_var')]
        if group.l2norm:
            rows.append(f'{group.l2norm}.weight')
        for key in rows + [f'{group.producer}.weight']:
            if key in state:
                state[key] = state[key][perm]
        for consumer in group.consumers + group.scaled_consumers:
            state[f'{consumer}.weight'] = state[f'{consumer}.weight'][:, perm]
    assert moved > 0
    twin = build_detector(dense_cfg)
    twin.load_state_dict(state, strict=True)
    data = dense.data_preprocessor(voc_batch(dense_cfg.test_pipeline), False)
    dense.eval(), twin.eval()
    with torch.no_grad():
        outputs = [model(data['inputs'], mode='tensor') for model in (dense, twin)]
    for a, b in zip(*(sum(map(list, o), []) for o in outputs)):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-4)
    fs = build_detector(load_config(TINY_CONFIG))
    assert assert_projected(fs, state, fs_state, loop_limit=600_000) == 35
