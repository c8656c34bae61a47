"""KSE (Li et al., CVPR 2019): indicator, groups, k-means, KSEConv, the tool."""
import itertools
import json
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from conftest import ROOT
from references import assert_same_detections, predict, run_test_tool
from fsnet_mmdet.compression import kse
from fsnet_mmdet.compression.kse import KSEConv

TINY_DENSE = ROOT / 'tests' / 'configs' / 'ssd300_bn_tiny.py'
#: The tiny dense SSD300-BN at width 1/16 (a few seconds per step on 2 cores).
WIDTHS = [32, 64, 32, 16, 16, 16]
SMALL = ['model.backbone.widen_factor=0.0625',
         f'model.neck.in_channels={WIDTHS[:2]}'.replace(' ', ''),
         f'model.neck.out_channels={WIDTHS}'.replace(' ', ''),
         f'model.bbox_head.in_channels={WIDTHS}'.replace(' ', '')]
#: Random weights: a threshold that keeps a few boxes to compare.
SCORE_THR = 0.3


# ------------------------------------------------------------- indicator
def _loop_entropy(kernels, k):
    """Explicit kNN density entropy of a list of kernels (lists of floats)."""
    dens = []
    for n, a in enumerate(kernels):
        dist = sorted(math.dist(a, b) for m, b in enumerate(kernels) if m != n)
        dens.append(sum(dist[:k]))
    total = sum(dens)
    return -sum(d / total * math.log2(d / total) for d in dens if d > 0)


def test_sparsity_and_entropy_match_explicit_loops():
    torch.manual_seed(0)
    w = torch.randn(7, 4, 3, 3, dtype=torch.float64)
    w[:, 2] = w[0, 2]  # every kernel of channel 2 the same: entropy 0
    ks, ke = kse.kernel_sparsity(w), kse.kernel_entropy(w)
    for c in range(4):
        kernels = [w[n, c].reshape(-1).tolist() for n in range(7)]
        assert ks[c] == pytest.approx(sum(abs(v) for k in kernels for v in k),
                                      rel=1e-12)
        expected = 0.0 if c == 2 else _loop_entropy(kernels, 5)
        assert ke[c] == pytest.approx(expected, rel=1e-10, abs=1e-12)
    # Fewer than k + 1 kernels: every other kernel is a neighbour.
    small = w[:3]
    for c in (0, 1):
        kernels = [small[n, c].reshape(-1).tolist() for n in range(3)]
        assert kse.kernel_entropy(small)[c] == pytest.approx(
            _loop_entropy(kernels, 2), rel=1e-10)
    assert kse.kernel_entropy(w[:1]).tolist() == [0.0] * 4


def test_indicator_is_the_normalized_formula():
    torch.manual_seed(1)
    w = torch.randn(6, 5, 3, 3, dtype=torch.float64)
    ks = [float(w[:, c].abs().sum()) for c in range(5)]
    ke = [_loop_entropy([w[n, c].reshape(-1).tolist() for n in range(6)], 5)
          for c in range(5)]

    def norm(xs):
        lo, hi = min(xs), max(xs)
        return [(x - lo) / (hi - lo) for x in xs]

    raw = [math.sqrt(s / (1 + e)) for s, e in zip(norm(ks), norm(ke))]
    assert kse.kse_indicator(w).tolist() == pytest.approx(norm(raw), abs=1e-12)
    # Channels it cannot tell apart are all kept whole.
    same = w[:, :1].repeat(1, 3, 1, 1)
    assert kse.kse_indicator(same).tolist() == [1.0, 1.0, 1.0]


def test_groups_and_centroid_counts_by_hand():
    v = torch.tensor([0.0, 0.2, 0.25, 0.5, 0.74, 0.75, 0.99, 1.0],
                     dtype=torch.float64)
    g = kse.kse_groups(v, 4)
    assert g.tolist() == [0, 0, 1, 2, 2, 3, 3, 3]
    # N = 16: g=1 -> ceil(16 / 2^(4-1-1+T)), g=2 -> ceil(16 / 2^(1+T)).
    assert kse.centroid_counts(g, 4, 0.0, 16).tolist() == [0, 0, 4, 8, 8, 16, 16, 16]
    assert kse.centroid_counts(g, 4, 1.0, 16).tolist() == [0, 0, 2, 4, 4, 16, 16, 16]
    assert kse.centroid_counts(g, 4, 0.5, 16).tolist() == [0, 0, 3, 6, 6, 16, 16, 16]
    assert kse.centroid_counts(g, 4, 9.0, 16).tolist() == [0, 0, 1, 1, 1, 16, 16, 16]
    assert kse.kse_groups(v, 2).tolist() == [0, 0, 0, 1, 1, 1, 1, 1]
    # Index bits: N ceil(log2 q) for 1 < q < N.
    assert [kse.index_bits(q, 16) for q in (0, 1, 2, 3, 8, 16)] == [
        0, 0, 16, 32, 48, 0]
    with pytest.raises(ValueError, match=r'G \(groups\) must be an int >= 2'):
        kse.kse_groups(v, 1)
    with pytest.raises(ValueError, match='T must be a finite number >= 0'):
        kse.centroid_counts(g, 4, -1.0, 16)


# ---------------------------------------------------------------- k-means
def _inertia(points, labels, q):
    total = 0.0
    for j in range(q):
        members = [p for p, lab in zip(points, labels) if lab == j]
        if members:
            mean = [sum(col) / len(members) for col in zip(*members)]
            total += sum(math.dist(p, mean) ** 2 for p in members)
    return total


def test_kmeans_is_a_lloyd_fixed_point_and_deterministic():
    torch.manual_seed(2)
    points = torch.randn(3, 12, 4, dtype=torch.float64)
    centroids, labels = kse.kmeans(points, 3, seed=5)
    for b in range(3):
        for i in range(12):  # every point at its nearest centroid
            d = [math.dist(points[b, i].tolist(), centroids[b, j].tolist())
                 for j in range(3)]
            assert d[labels[b, i]] <= min(d) + 1e-12
        for j in range(3):  # every centroid the mean of its points
            members = points[b][labels[b] == j]
            assert len(members) > 0
            torch.testing.assert_close(centroids[b, j], members.mean(0))
    again = kse.kmeans(points, 3, seed=5)
    assert torch.equal(again[0], centroids) and torch.equal(again[1], labels)


def test_kmeans_finds_the_optimum_of_separated_clusters():
    """Two far groups of 4 points: the brute-force best of all 2^8
    assignments, found by k-means."""
    torch.manual_seed(3)
    base = torch.tensor([[0.0, 0.0], [10.0, 10.0]], dtype=torch.float64)
    points = (base.repeat_interleave(4, 0)
              + 0.3 * torch.randn(8, 2, dtype=torch.float64))[torch.randperm(8)]
    pts = points.tolist()
    best = min(_inertia(pts, lab, 2) for lab in itertools.product((0, 1), repeat=8))
    _, labels = kse.kmeans(points[None], 2, seed=0)
    assert _inertia(pts, labels[0].tolist(), 2) == pytest.approx(best, rel=1e-12)
    # One cluster: the mean of all points.
    c, lab = kse.kmeans(points[None], 1)
    torch.testing.assert_close(c[0, 0], points.mean(0))
    assert lab.eq(0).all()
    # As many clusters as points, two of them equal (an empty cluster is
    # unavoidable): no NaN, every point on a centroid.
    dup = torch.cat([points[:3], points[:1]])[None]
    c, lab = kse.kmeans(dup, 4, max_iter=5)
    assert torch.isfinite(c).all()
    torch.testing.assert_close(c[0, lab[0]], dup[0])  # every point on its own
    with pytest.raises(ValueError, match='1 <= q <= 8'):
        kse.kmeans(points[None], 9)


# ------------------------------------------------------------------ bits
def test_pack_bits_matches_a_bit_string():
    values = torch.tensor([5, 0, 3, 1, 6, 2])
    widths = torch.tensor([3, 0, 2, 1, 3, 2])
    stream = ''.join(format(v, f'0{w}b')[::-1] if w else ''
                     for v, w in zip(values.tolist(), widths.tolist()))
    stream += '0' * (-len(stream) % 8)
    expected = [int(stream[i:i + 8][::-1], 2) for i in range(0, len(stream), 8)]
    packed = kse.pack_varwidth(values, widths)
    assert packed.dtype == torch.uint8 and packed.tolist() == expected
    assert kse.unpack_varwidth(packed, widths).tolist() == [5, 0, 3, 1, 6, 2]
    assert kse.pack_varwidth(values, torch.zeros(6)).numel() == 0


# --------------------------------------------------------------- KSEConv
def _hand_layer():
    """KSEConv(4 -> 5, 3x3) with q = [0, 2, 5, 1] and chosen centroids/index."""
    torch.manual_seed(4)
    layer = KSEConv(4, 5, 3, padding=1, q=[0, 2, 5, 1])
    cents = torch.randn(8, 3, 3)  # channel 1: rows 0-1, 2: rows 2-6, 3: row 7
    with torch.no_grad():
        layer.centroids.copy_(cents)
    labels = torch.tensor([[1, 0, 0], [0, 1, 0], [1, 2, 0], [1, 3, 0], [0, 4, 0]])
    layer.set_labels(labels)
    hand = torch.zeros(5, 4, 3, 3)
    for n in range(5):
        hand[n, 1] = cents[0 + labels[n, 0]]
        hand[n, 2] = cents[2 + n]  # kept whole: kernel n is centroid n
        hand[n, 3] = cents[7]
    return layer, hand, labels


def test_kseconv_weight_equals_a_hand_built_one():
    layer, hand, labels = _hand_layer()
    torch.testing.assert_close(layer.weight, hand)
    assert layer.labels()[:, 0].tolist() == labels[:, 0].tolist()
    assert layer.labels()[:, 1].tolist() == list(range(5))  # identity
    x = torch.randn(2, 4, 6, 6)
    torch.testing.assert_close(layer(x), F.conv2d(x, hand, layer.bias, padding=1))
    # Stored: centroids 8 x 9, bias 5, index 5 kernels x 1 bit (q=2) -> 1 byte.
    assert sorted(layer.state_dict()) == ['bias', 'centroids', 'index']
    assert layer.index.dtype == torch.uint8 and layer.index.numel() == 1
    p = layer.params()
    assert (p.centroids, p.bias, p.index_bits) == (72, 5, 5)
    assert p.effective == 72 + 5 + 5 / 32
    # Round trip through a state dict.
    fresh = KSEConv(4, 5, 3, padding=1, q=[0, 2, 5, 1])
    fresh.load_state_dict(layer.state_dict())
    torch.testing.assert_close(fresh(x), layer(x))


def test_kseconv_gradient_sums_over_shared_kernels():
    layer, hand, labels = _hand_layer()
    x = torch.randn(2, 4, 6, 6)
    dense = hand.clone().requires_grad_(True)
    F.conv2d(x, dense, layer.bias, padding=1).pow(2).sum().backward()
    layer(x).pow(2).sum().backward()
    expected = torch.zeros(8, 3, 3)
    for n in range(5):
        expected[0 + labels[n, 0]] += dense.grad[n, 1]
        expected[2 + n] += dense.grad[n, 2]
        expected[7] += dense.grad[n, 3]
    torch.testing.assert_close(layer.centroids.grad, expected)


def test_kseconv_flops_by_hand():
    from fsnet_mmdet.compression.structure import model_flops
    layer, _, _ = _hand_layer()
    q = [0, 2, 5, 1]
    # 5 outputs x 3 kept channels x 9 x 8x8 pixels; shared: (2+5+1) x 9 x 64
    # centroid maps + 5 x 3 x 64 additions.
    assert kse.kse_flops(q, 5, 9, 64) == 5 * 3 * 9 * 64
    assert kse.kse_flops(q, 5, 9, 64, shared=True) == 8 * 9 * 64 + 5 * 3 * 64
    model = nn.Sequential(nn.Conv2d(3, 4, 1), layer)
    assert model_flops(model, (8, 8)) == 3 * 4 * 64 + 5 * 3 * 9 * 64
    assert kse.shared_flops_saving(model, (8, 8)) == (
        5 * 3 * 9 * 64 - (8 * 9 * 64 + 5 * 3 * 64))


@pytest.mark.parametrize('kwargs, match', [
    (dict(q=[1, 2, 3]), 'q must list, per input channel'),
    (dict(q=[0, 6, 1, 1]), 'q must list'),
    (dict(q=[0, 0, 0, 0]), 'at least one > 0'),
    (dict(q=[1, 1, 1, 1], groups=2), 'groups=1 only'),
])
def test_kseconv_bad_options(kwargs, match):
    with pytest.raises(ValueError, match=match):
        KSEConv(4, 5, 3, **kwargs)


def test_kseconv_builds_from_the_registry():
    from mmengine.registry import MODELS
    layer = MODELS.build(dict(type='KSEConv', in_channels=4, out_channels=5,
                              kernel_size=3, q=[0, 2, 5, 1]))
    assert isinstance(layer, KSEConv) and layer.centroids.shape == (8, 3, 3)


def test_kse_from_conv2d_clusters_each_channel():
    torch.manual_seed(5)
    conv = nn.Conv2d(4, 6, 3, padding=1)
    q = [0, 1, 6, 3]
    layer = kse.kse_from_conv2d(conv, q, seed=1)
    w, got = conv.weight.detach(), layer.weight
    assert got[:, 0].eq(0).all()
    for n in range(6):  # q = 1: the mean kernel; q = N: the kernels
        torch.testing.assert_close(got[n, 1], w[:, 1].mean(0))
    torch.testing.assert_close(got[:, 2], w[:, 2])
    _, labels = kse.kmeans(w[:, 3].reshape(1, 6, 9), 3, seed=1 + 3)
    for j in range(3):  # q = 3: every kernel the mean of its cluster
        members = labels[0] == j
        torch.testing.assert_close(got[members, 3],
                                   w[members, 3].mean(0).expand_as(got[members, 3]))
    x = torch.randn(1, 4, 5, 5)
    torch.testing.assert_close(layer(x), F.conv2d(x, got, conv.bias, padding=1))


# ------------------------------------------------------ target search
def test_setting_for_target_is_the_smallest_t():
    torch.manual_seed(6)
    layers = [kse.KSELayer(f'l{i}', n, 9, torch.rand(c, dtype=torch.float64))
              for i, (n, c) in enumerate([(16, 8), (32, 16), (64, 32)])]
    dense = 16 * 8 * 9 + 32 * 16 * 9 + 64 * 32 * 9
    target = dense / 3
    g, t, count = kse.kse_setting_for_target(layers, 100.0, target)
    assert count <= target
    assert count == kse.kse_effective_params(layers, 100.0, g, t)
    if t > 0:
        assert kse.kse_effective_params(layers, 100.0, g, t - 0.002) > target
    if g > 4:  # smaller G cannot reach it even with one centroid per channel
        assert kse.kse_effective_params(layers, 100.0, g - 1, 99.0) > target
    with pytest.raises(ValueError, match='below what KSE reaches'):
        kse.kse_setting_for_target(layers, 100.0, 50.0)


# -------------------------------------------------------------- the tool
@pytest.mark.e2e
def test_tool_kse_end_to_end(tmp_path, capsys):
    """tools/compress.py --method kse on the tiny dense SSD300-BN (random
    weights): config + checkpoint written; tools/test.py evaluates them."""
    from conftest import build_detector, load_config
    from fsnet_mmdet.layers.accounting import count_params
    from fsnet_mmdet.tools.compress import main

    opts = dict(kv.split('=', 1) for kv in SMALL)
    cfg = load_config(TINY_DENSE, **{k: eval(v) for k, v in opts.items()})
    source = tmp_path / 'dense.pth'
    dense = build_detector(cfg)
    torch.save(dict(state_dict=dense.state_dict()), source)
    out = tmp_path / 'kse'
    main([str(TINY_DENSE), str(source), '--method', 'kse', '--target', '4x',
          '--out-dir', str(out), '--cfg-options', *SMALL])
    printed = capsys.readouterr().out
    assert 'KSE: G=' in printed and 'reduction' in printed
    report = json.loads((out / 'report.json').read_text())
    before, after = report['before'], report['after']
    assert before['params'] == sum(p.numel() for p in dense.parameters())
    assert after['effective_params'] <= before['params'] / 4
    assert after['flops_centroid_sharing'] < after['flops'] < before['flops']
    assert sorted(p.name for p in out.iterdir()) == [
        'checkpoint.pth', 'config.py', 'report.json']  # no temporary left
    ckpt = torch.load(out / 'checkpoint.pth', weights_only=True)
    assert ckpt['meta']['compression']['method'] == 'kse'
    text = (out / 'config.py').read_text()
    assert "'fsnet_mmdet.compression'" in text and 'compression=dict(' in text
    model = build_detector(load_config(out / 'config.py'))
    model.load_state_dict(ckpt['state_dict'])
    named = {n: m for n, m in model.named_modules() if isinstance(m, KSEConv)}
    layers = list(named.values())
    assert len(layers) == 34  # every dense conv but conv1_1
    counts = count_params(model)  # tools/count_params.py's table
    assert (counts.stored, counts.dense) == (after['params'], before['params'])
    # Independent: every parameter's 32 bits and each layer's index bits.
    bits = sum(m.params().index_bits for m in layers)
    assert bits > 0 and after['index_bits'] == bits
    assert counts.bits == 32 * sum(p.numel() for p in model.parameters()) + bits
    assert after['effective_params'] == counts.effective == counts.stored + bits / 32
    # Fine-tuning: the detector's training loss on real images backpropagates
    # into the centroids (the index is a buffer); every centroid reaches an
    # output (which ones a given batch's loss reaches depends on its boxes).
    from conftest import voc_batch
    cfg = load_config(out / 'config.py')
    model.train()
    data = model.data_preprocessor(voc_batch(cfg.train_pipeline), True)
    total, _ = model.parse_losses(model.loss(data['inputs'], data['data_samples']))
    total.backward()
    assert torch.isfinite(total) and all(m.centroids.grad is not None for m in layers)
    model.zero_grad()
    sum(t.pow(2).sum() for level in model(data['inputs']) for t in level).backward()
    zero = [n for n, m in named.items() if not m.centroids.grad.abs().sum() > 0]
    assert not zero
    # tools/test.py on the written files: the detections of the written
    # config's model holding the checkpoint, predicted here.
    _, theirs = run_test_tool(out / 'config.py', out / 'checkpoint.pth',
                              tmp_path / 'test',
                              f'model.test_cfg.score_thr={SCORE_THR}')
    cfg = load_config(out / 'config.py',
                      **{'model.test_cfg.score_thr': SCORE_THR})
    reference = build_detector(cfg)
    reference.load_state_dict(ckpt['state_dict'], strict=True)
    assert_same_detections(predict(reference, cfg), theirs)


def test_tool_rejects_bad_options(tmp_path):
    from fsnet_mmdet.tools.compress import main, parse_target
    assert parse_target('230k', 10) == 230000
    assert parse_target('1.5M', 10) == 1.5e6
    assert parse_target('4x', 1000) == 250
    with pytest.raises(ValueError, match='--target must be a parameter count'):
        parse_target('big', 10)
    base = [str(TINY_DENSE), 'x.pth', '--out-dir', str(tmp_path)]
    for extra in (['--method', 'kse'], ['--method', 'kse', '--target', '2x',
                                        '--kse-t', '1'],
                  ['--method', 'kse', '--lrf-ratio', '0.5']):
        with pytest.raises(SystemExit):
            main(base + extra)
    with pytest.raises(SystemExit, match='x.pth can not be found'):
        main(base + ['--method', 'kse', '--target', '2x'])
