"""benchmarks/bench_kmeans.py without scikit-learn: the inertia formula by
hand, the recorded k-means calls of a KSE compression against kse.py's own
layer list, the table's totals, and the exit when sklearn is missing."""
import importlib.util
import math
import sys
from collections import Counter

import numpy as np
import pytest
import torch

from benchmarks import bench_kmeans as bench
from conftest import ROOT
from fsnet_mmdet.compression import kse
from fsnet_mmdet.tools.compress import parse_target


def test_mean_inertia_by_hand():
    points = np.array([[[0., 0.], [2., 0.], [5., 5.]],
                       [[1., 1.], [1., 3.], [0., 0.]]], dtype=np.float32)
    centroids = np.array([[[1., 0.], [5., 4.]],
                          [[1., 2.], [9., 9.]]], dtype=np.float32)
    labels = np.array([[0, 0, 1], [0, 0, 0]])
    # set 0: 1 + 1 + 1 = 3; set 1: 1 + 1 + (1 + 4) = 7; mean 5.
    assert bench.mean_inertia(points, centroids, labels) == 5.0
    assert bench.mean_inertia(torch.from_numpy(points), torch.from_numpy(centroids),
                              torch.from_numpy(labels)) == 5.0


def test_recorder_passes_through_or_returns_placeholders():
    points = torch.randn(3, 7, 4)
    direct = kse.kmeans(points, 2, seed=5)
    # kse.kmeans is looked up at call time: the recorder stands in for it.
    through, calls = bench.record_kmeans(lambda: kse.kmeans(points, 2, seed=5),
                                         run=True)
    assert calls == [bench.Call(3, 7, 4, 2, kse.KMEANS_INITS, kse.KMEANS_ITERS)]
    assert all(torch.equal(a, b) for a, b in zip(direct, through))
    (centroids, labels), calls = bench.record_kmeans(
        lambda: kse.kmeans(points, 3, inits=2, max_iter=9))
    assert calls == [bench.Call(3, 7, 4, 3, 2, 9)]
    assert centroids.shape == (3, 3, 4) and labels.shape == (3, 7)
    assert kse.kmeans is not None and kse.kmeans.__name__ == 'kmeans'


def _test_kse_module():
    spec = importlib.util.spec_from_file_location(
        '_test_kse_for_bench', ROOT / 'tests' / 'compression' / 'test_kse.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_tiny_model_is_test_kse_s():
    test_kse = _test_kse_module()
    spec = bench.MODELS['tiny']
    assert ROOT / spec.config == test_kse.TINY_DENSE
    options = {k: eval(v) for k, v in (kv.split('=', 1) for kv in test_kse.SMALL)}
    assert spec.options == options


def test_recorded_calls_are_kse_s_own_layer_list():
    """The calls of the tool's path are, layer by layer, one per distinct
    q strictly between 0 and N (ascending), B = its channels, P = N,
    D = kh kw: what kse.py's layer list and target search give."""
    model = bench.build_model('tiny', seed=0)
    names = kse.kse_layer_names(model)
    layers = kse.kse_layers(model, names)
    source = sum(p.numel() for p in model.parameters())
    others = source - sum(model.get_submodule(n).weight.numel() for n in names)
    groups, t, _ = kse.kse_setting_for_target(layers, others,
                                              parse_target('4x', source))
    expected = []
    for layer in layers:
        n = layer.out_channels
        counts = Counter(v for v in layer.q(groups, t).tolist() if 0 < v < n)
        expected += [bench.Call(counts[q], n, layer.kernel_area, q,
                                kse.KMEANS_INITS, kse.KMEANS_ITERS)
                     for q in sorted(counts)]
    calls, how = bench.compression_calls(model, '4x', seed=0)
    assert f'G={groups}, T={t:g}' in how
    assert calls == expected and len(calls) > 10
    assert all(isinstance(m, kse.KSEConv)
               for m in map(model.get_submodule, names))  # compressed in place
    counted = bench.shape_counts(calls)
    assert sum(n for _, n in counted) == len(calls)
    assert [c for c, _ in counted] == list(dict.fromkeys(calls))
    quick = bench.quick_shapes(counted)
    work = sorted(math.prod(c.shape) for c, _ in counted if c.q > 1)
    assert [math.prod(c.shape) for c, _ in quick] == work[:2]


def test_table_total_weights_by_calls():
    def row(b, ours, sk, i_ours, i_sk):
        return dict(call=bench.Call(b, 8, 9, 2, 3, 100), ours=ours, sklearn=sk,
                    inertia_ours=i_ours, inertia_sklearn=i_sk)

    rows = [(row(2, 0.5, 1.0, 10.0, 11.0), 3), (row(4, 1.0, 1.0, 1.0, 2.0), 1)]
    line = bench.format_row('tiny', rows[0][0], 3)
    assert line.split()[-5:] == ['0.5000', '1.0000', '2.00', '10.000', '11.000']
    assert len(line) == len(bench.HEADER)
    total = bench.format_total('tiny', rows).split()
    # seconds 0.5*3 + 1*1 = 2.5 and 1*3 + 1*1 = 4; inertia 10*2*3 + 1*4*1.
    assert total[4:10] == ['4', '2.500', '4.000', '1.60', '64.0', '74.0']


def test_without_sklearn_exits_2_with_the_pip_line(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, 'sklearn', None)
    monkeypatch.setitem(sys.modules, 'sklearn.cluster', None)
    with pytest.raises(SystemExit) as exit_:
        bench.main(['--quick'])
    assert exit_.value.code == 2
    captured = capsys.readouterr()
    assert captured.out == ''
    assert captured.err == bench.SKLEARN_MISSING + '\n'
    assert captured.err.count('\n') == 1 and 'pip install scikit-learn' in captured.err
