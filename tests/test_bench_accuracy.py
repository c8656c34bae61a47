"""benchmarks/bench_accuracy.py at tiny scale (--quick): real tools, resumable."""
import importlib.util
import json
import os
import statistics

import pytest

from conftest import run_tool


def test_quick_benchmark_trains_tests_quantizes_and_resumes(tmp_path):
    work = tmp_path / 'bench'
    args = ['benchmarks/bench_accuracy.py', '--quick', '--work-dir', work]
    result = run_tool(*args, timeout=900)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    report = json.loads((work / 'docs' / 'results.json').read_text())
    rows = {r['name']: r for r in report['rows']}
    assert set(rows) == {'dense-w0.25', 'fs-k3x1', 'fs-k3x1-wq',
                         'dense-as-fs-k3x1'}
    assert all(r['seeds'] == 1 and len(r['maps']) == 1 for r in rows.values())
    assert all(0 <= m <= 1 for r in rows.values() for m in r['maps'])
    fs, wq, thin = rows['fs-k3x1'], rows['fs-k3x1-wq'], rows['dense-as-fs-k3x1']
    wide = rows['dense-w0.25']
    # The thin dense model is matched to the FS model's parameter count.
    assert abs(thin['params'] - fs['params']) / fs['params'] < 0.02
    assert thin['widen'] < 0.1 and fs['params'] * 7 < wide['params']
    # WQ: a quarter of the summary bytes, fewer effective parameters.
    assert wq['effective'] < fs['params'] / 3 and wq['bytes'] < fs['bytes'] / 3
    assert all(r['s_iter'] and r['s_iter'] > 0 for r in rows.values())
    # The final training loss is the mean of the logged losses' last quarter.
    for run in report['runs']:
        assert run['loss'] > 0
        # SSD's loss is the sum of its two terms, logged per iteration.
        assert run['loss'] == pytest.approx(run['loss_cls'] + run['loss_bbox'],
                                            rel=1e-4)
    assert all(r['loss'] > 0 for r in rows.values())
    assert len(report['runs']) == 3
    table = (work / 'docs' / 'results.md').read_text()
    assert '| FS, K3 x 1 (paper Table 1 rule), WQ |' in table
    assert (work / 'docs' / 'params_vs_map.png').stat().st_size > 10_000
    # tools/test.py's per-class table names the dataset's own classes.
    log = (work / 'fs-k3x1' / 'seed0' / 'log.txt').read_text()
    assert '| circle ' in log and 'aeroplane' not in log

    again = run_tool(*args, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stdout.count('(done, skipped)') == 3
    assert (work / 'docs' / 'results.md').read_text().split('\n\nCommand')[0] \
        == table.split('\n\nCommand')[0]


def test_bad_arguments_are_refused(tmp_path):
    result = run_tool('benchmarks/bench_accuracy.py', '--quick', '--iters', '1',
                      '--work-dir', tmp_path)
    assert result.returncode != 0 and '--iters must be >= 2' in result.stderr
    result = run_tool('benchmarks/bench_accuracy.py', '--variants', 'fs-k9')
    assert result.returncode != 0 and 'invalid choice' in result.stderr


def _bench_module():
    path = os.path.join(os.path.dirname(__file__), '..', 'benchmarks',
                        'bench_accuracy.py')
    spec = importlib.util.spec_from_file_location('bench_accuracy', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_summary_rows_are_mean_and_sample_std_over_seeds():
    bench = _bench_module()
    fs = bench.VARIANTS['fs-k3x1']
    maps, wq = [0.30, 0.36, 0.27], [0.29, 0.35, 0.28]
    runs = [dict(variant='fs-k3x1', seed=s, params=1000, bytes=4000,
                 s_iter=t, loss=l, mAP=m, mAP_wq=q, effective_wq=250,
                 bytes_wq=1100)
            for s, (m, q, t, l) in enumerate(zip(maps, wq, [1.0, 3.0, 2.0],
                                                 [5.0, 6.0, 7.0]))]
    runs.append(dict(runs[0], variant='dense-w0.25', mAP=0.9))  # another point
    rows = {r['name']: r for r in bench.summarize([fs], runs)}
    assert set(rows) == {'fs-k3x1', 'fs-k3x1-wq'}
    row, row_wq = rows['fs-k3x1'], rows['fs-k3x1-wq']
    # Independent reference: the textbook sample std, (n - 1) denominator.
    n, mean = 3, sum(maps) / 3
    std = (sum((m - mean) ** 2 for m in maps) / (n - 1)) ** 0.5
    assert row['mAP'] == pytest.approx(mean) and row['std'] == pytest.approx(std)
    assert row_wq['mAP'] == pytest.approx(statistics.mean(wq))
    assert (row['seeds'], row['s_iter'], row['loss']) == (3, 2.0, 6.0)
    assert (row['effective'], row_wq['effective']) == (1000, 250)
    assert (row['bytes'], row_wq['bytes']) == (4000, 1100)
