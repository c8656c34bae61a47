"""benchmarks/bench_accuracy.py at tiny scale (--quick): real tools, resumable;
the comparison of issue 22 (--quick --compare: int8, BSF and LRF rows), its
FLOPs counter against hand counts, its report's pure functions."""
import json
import math
import statistics

import pytest
import torch
from torch import nn

from benchmarks.accuracy.configs import build, count_flops, finetune_text
from benchmarks.accuracy.report import (clear_winners, compare_table,
                                        front_notes, pareto_front, summarize)
from benchmarks.accuracy.runner import cost
from benchmarks.accuracy.variants import (BSF_SIZES, COMPARE, SOURCES,
                                          VARIANTS, method_of)
from benchmarks.bench_accuracy import main
from conftest import ROOT, build_detector, load_config, run_tool
from fsnet_mmdet.tools.pipeline import map_of


@pytest.fixture(scope='module')
def quick_run(tmp_path_factory):
    """One ``--quick`` run (3 points, seed 0) shared by the tests below: the
    comparison resumes in its work dir."""
    work = tmp_path_factory.mktemp('bench') / 'bench'
    args = ['benchmarks/bench_accuracy.py', '--quick', '--work-dir', work]
    result = run_tool(*args, timeout=900)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    return work, args


def _assert_maps_are_the_runs(work, rows):
    """Every row's mAP (one seed: 0) is its run's: the number in the run's
    result.json and the one tools/test.py wrote in the run's test directory
    (``test_wq`` for a WQ row)."""
    for name, row in rows.items():
        wq = name.endswith('-wq')
        run_dir = work / name.removesuffix('-wq') / 'seed0'
        result = json.loads((run_dir / 'result.json').read_text())
        measured = map_of(str(run_dir / ('test_wq' if wq else 'test')))
        assert result['mAP_wq' if wq else 'mAP'] == measured, name
        assert row['maps'] == [measured], name
        assert row['mAP'] == measured and row['std'] == 0.0, name


@pytest.mark.e2e(seconds=70)
def test_quick_benchmark_trains_tests_quantizes_and_resumes(quick_run):
    work, args = quick_run
    report = json.loads((work / 'docs' / 'results.json').read_text())
    rows = {r['name']: r for r in report['rows']}
    assert set(rows) == {'dense-w0.25', 'fs-k3x1', 'fs-k3x1-wq',
                         'dense-as-fs-k3x1'}
    assert all(r['seeds'] == 1 and len(r['maps']) == 1 for r in rows.values())
    _assert_maps_are_the_runs(work, rows)
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


def _dense_conv_weights(model: nn.Module):
    """(elements, output channels) of a model's plain conv weights: an
    explicit loop, independent of fsnet_mmdet.compression.int8."""
    elements = channels = 0
    for module in model.modules():
        if isinstance(module, nn.Conv2d) and isinstance(
                module._parameters.get('weight'), nn.Parameter):
            elements += module.weight.numel()
            channels += module.out_channels
    return elements, channels


def _bsf_bits_by_hand(model: nn.Module) -> int:
    """Stored bits of a BSF model from the layer definition: bank M d k k,
    indices K G ceil(log2 M), scale (and bias) 32 K; other parameters 32."""
    from fsnet_mmdet.compression.bsf import BSFConv
    bits, inside = 0, set()
    for module in model.modules():
        if isinstance(module, BSFConv):
            m, d, k1, k2 = module.bank.shape
            slices = module.in_channels // d
            bias = module.bias is not None  # none before a BatchNorm
            bits += m * d * k1 * k2 + module.out_channels * slices * math.ceil(
                math.log2(m)) + 32 * module.out_channels * (1 + bias)
            inside.update(id(p) for p in module.parameters(recurse=False))
    return bits + sum(32 * p.numel() for p in model.parameters()
                      if id(p) not in inside)


@pytest.mark.e2e(seconds=120)
def test_quick_compare_int8_bsf_lrf_rows(quick_run):
    """--quick --compare in the --quick work dir: the three points are
    resumed; one int8, one BSF and one LRF point run end to end (KSE takes
    LRF's path with --method kse)."""
    from fsnet_mmdet.tools.count_params import build_model_from_config

    work, _ = quick_run
    result = run_tool('benchmarks/bench_accuracy.py', '--quick', '--compare',
                      '--work-dir', work, timeout=1200)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    assert result.stdout.count('(done, skipped)') == 3
    assert result.stdout.count(' min\n') >= 3  # a line per run it ran
    docs = work / 'docs-compare'
    report = json.loads((docs / 'results.json').read_text())
    rows = {r['name']: r for r in report['rows']}
    assert set(rows) == {'dense-w0.25', 'fs-k3x1', 'fs-k3x1-wq',
                         'dense-as-fs-k3x1', 'dense-as-fs-k3x1-int8',
                         'bsf-m64-d16', 'lrf-as-fs-k3x1', 'lrf-as-fs-k3x1-int8'}
    assert {n: r['method'] for n, r in rows.items()} == {
        'dense-w0.25': 'dense', 'fs-k3x1': 'FS', 'fs-k3x1-wq': 'FS-WQ',
        'dense-as-fs-k3x1': 'dense', 'dense-as-fs-k3x1-int8': 'dense int8',
        'bsf-m64-d16': 'BSF', 'lrf-as-fs-k3x1': 'LRF',
        'lrf-as-fs-k3x1-int8': 'LRF int8'}
    assert report['finetune_iters'] == 2
    assert all(r['flops'] > 0 for r in rows.values())
    _assert_maps_are_the_runs(work, rows)
    runs = {r['variant']: r for r in report['runs']}
    wide, thin, fs = rows['dense-w0.25'], rows['dense-as-fs-k3x1'], rows['fs-k3x1']
    # FS and BSF (weight forward) run the dense convs: the same FLOPs.
    assert fs['flops'] == wide['flops'] == rows['bsf-m64-d16']['flops']

    # int8 of the thin dense run's own weights (kept by the source run).
    int8 = rows['dense-as-fs-k3x1-int8']
    run_dir = work / 'dense-as-fs-k3x1-int8' / 'seed0'
    assert int8['bytes'] == (run_dir / 'weights_int8.pth').stat().st_size
    assert (work / 'dense-as-fs-k3x1' / 'seed0' / 'weights_fp32.pth').is_file()
    assert runs['dense-as-fs-k3x1-int8']['mAP_source'] == thin['mAP']
    assert (int8['params'], int8['flops'], int8['widen']) == (
        thin['params'], thin['flops'], thin['widen'])
    model = build_model_from_config(
        str(work / 'dense-as-fs-k3x1' / 'seed0' / 'config.py'))
    elements, channels = _dense_conv_weights(model)
    # One byte per weight (a quarter parameter) plus one float32 scale each.
    assert int8['effective'] == pytest.approx(
        thin['params'] - elements + elements / 4 + channels)
    assert thin['bytes'] / 4 < int8['bytes'] < thin['bytes'] / 2
    assert '$ tools/quantize_int8.py' in (run_dir / 'log.txt').read_text()

    # BSF: the compressed checkpoint's bytes, the stored bits by hand.
    bsf = rows['bsf-m64-d16']
    run_dir = work / 'bsf-m64-d16' / 'seed0'
    assert bsf['bytes'] == (run_dir / 'weights_bsf.pth').stat().st_size
    model = build_model_from_config(str(run_dir / 'config.py'))
    bits = _bsf_bits_by_hand(model)
    assert bsf['effective'] == pytest.approx(bits / 32)
    assert bits / 8 < bsf['bytes'] < runs['bsf-m64-d16']['bytes_float'] / 10
    assert "'seed': 0" in (run_dir / 'config.py').read_text()  # the run's

    # LRF from the dense width-0.25 run, to FS K3 x 1's count, fine-tuned.
    lrf, run = rows['lrf-as-fs-k3x1'], runs['lrf-as-fs-k3x1']
    run_dir = work / 'lrf-as-fs-k3x1' / 'seed0'
    assert run['target'] == fs['params'] and run['source'] == 'dense-w0.25'
    assert run['mAP_source'] == wide['mAP']
    assert 0 < run['compression']['ratio'] < 1
    assert lrf['schedule'] == '2 + 2' and lrf['s_iter'] > 0
    assert lrf['effective'] == lrf['params'] <= fs['params']
    assert lrf['flops'] < wide['flops'] / 3  # fewer channels: fewer FLOPs
    assert not (run_dir / 'compressed' / 'checkpoint.pth').exists()
    assert (work / 'dense-w0.25' / 'seed0' / 'weights_fp32.pth').is_file()
    text = (run_dir / 'config.py').read_text()
    assert 'lr=0.001' in text and 'max_iters=2' in text
    cfg = load_config(run_dir / 'config.py')
    assert cfg.model.compression.method == 'lrf'
    assert cfg.param_scheduler[1]['eta_min'] == 1e-5
    assert cfg.load_from == str(run_dir / 'compressed' / 'checkpoint.pth')

    # int8 of LRF's fine-tuned weights (kept: another point starts there).
    lrf_int8 = rows['lrf-as-fs-k3x1-int8']
    assert (run_dir / 'weights_fp32.pth').is_file()
    assert runs['lrf-as-fs-k3x1-int8']['mAP_source'] == lrf['mAP']
    assert lrf_int8['schedule'] == '2 + 2, then int8'
    assert (lrf_int8['params'], lrf_int8['flops']) == (lrf['params'],
                                                       lrf['flops'])
    assert lrf['bytes'] / 4 < lrf_int8['bytes'] < lrf['bytes'] / 2

    text = (docs / 'results.md').read_text()
    assert text.startswith('| method | model | # params |')
    assert 'Pareto front; rows at <= its bytes' in text
    assert '| LRF | LRF pruning' in text and '| 2 + 2 |' in text
    for plot in ('map_vs_bytes.png', 'map_vs_flops.png'):
        assert (docs / plot).stat().st_size > 10_000

    # A fine-tuned source that finished without its weights (a run from
    # before they were kept) is compressed and fine-tuned again for the int8
    # point, under retrain/; its row keeps the first run's result.
    (run_dir / 'weights_fp32.pth').unlink()
    int8_dir = work / 'lrf-as-fs-k3x1-int8' / 'seed0'
    (int8_dir / 'result.json').unlink()
    result = run_tool('benchmarks/bench_accuracy.py', '--quick', '--compare',
                      '--work-dir', work, timeout=1200)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    assert ('lrf-as-fs-k3x1 seed 0 finished without its weights: compressing '
            'and fine-tuning it again') in result.stdout
    assert result.stdout.count('(done, skipped)') == 6
    assert (run_dir / 'weights_fp32.pth').is_file()
    assert (run_dir / 'retrain' / 'compressed' / 'report.json').is_file()
    log = (int8_dir / 'log.txt').read_text()
    assert str(run_dir / 'retrain' / 'config.py') in log.split(
        '$ tools/quantize_int8.py')[-1].splitlines()[0]
    rerun = json.loads((int8_dir / 'result.json').read_text())
    assert rerun['mAP_source'] == lrf['mAP']  # the row's run


@pytest.mark.e2e
def test_bad_arguments_are_refused(tmp_path):
    result = run_tool('benchmarks/bench_accuracy.py', '--quick', '--iters', '1',
                      '--work-dir', tmp_path)
    assert result.returncode != 0 and '--iters must be >= 2' in result.stderr
    result = run_tool('benchmarks/bench_accuracy.py', '--variants', 'fs-k9')
    assert result.returncode != 0 and 'invalid choice' in result.stderr


@pytest.mark.parametrize('argv, message', [
    (['--compare', '--variants', 'fs-k3x1'], 'give --compare or --variants'),
    (['--quick', '--finetune-iters', '1'], '--finetune-iters must be >= 2'),
])
def test_bad_new_arguments_are_refused(capsys, tmp_path, argv, message):
    with pytest.raises(SystemExit) as err:
        main(argv + ['--work-dir', str(tmp_path)])
    assert err.value.code != 0 and message in capsys.readouterr().err


def test_list_prints_every_variant_once(capsys):
    main(['--list'])
    lines = capsys.readouterr().out.splitlines()[1:]
    assert len(lines) == len(VARIANTS)
    listed = {line[2:].split()[0]: line for line in lines}
    assert set(listed) == set(VARIANTS)
    assert {n for n, line in listed.items() if line.startswith('*')} == set(
        COMPARE)
    assert 'tools/quantize_int8.py' in listed['dense-w0.25-int8']
    assert '--method lrf' in listed['lrf-as-fs-k3x1']


def test_compare_is_issue_22_set():
    methods = {n: method_of(VARIANTS[n]) for n in COMPARE}
    assert sorted(methods.values()) == sorted(
        ['FS', 'dense', 'dense', 'dense int8', 'dense int8', 'BSF', 'BSF',
         'BSF', 'KSE', 'LRF', 'LRF int8'])
    v = VARIANTS
    assert v['fs-k3x1-interleave'].pred_interleave  # the configs' recipe
    assert (v['dense-w0.25-int8'].source, v['dense-as-fs-k3x1-int8'].source) \
        == ('dense-w0.25', 'dense-as-fs-k3x1')
    assert {v[n].source for n in ('kse-as-fs-k3x1', 'lrf-as-fs-k3x1')} == {
        'dense-w0.25'}
    assert all(VARIANTS[n].matches == 'fs-k3x1'
               for n in ('dense-as-fs-k3x1', 'kse-as-fs-k3x1', 'lrf-as-fs-k3x1'))
    assert v['lrf-as-fs-k3x1-int8'].source == 'lrf-as-fs-k3x1'
    assert SOURCES == {'dense-w0.25', 'dense-as-fs-k3x1', 'lrf-as-fs-k3x1'}
    # Points made from another run after it; costs in training iterations.
    assert [cost(v[n], 750, 250) for n in (
        'dense-w0.25', 'dense-w0.25-int8', 'kse-as-fs-k3x1')] == [750, 0, 250]


def test_bsf_sizes_span_fs_wq_bytes_and_below(tmp_path):
    """The three BSF points' compressed checkpoints: at most FS-WQ K3 x 1's
    276,897 bytes (issue 22), the largest within 2% of it."""
    from fsnet_mmdet.compression.bsf import bsf_layers, compress_bsf_state_dict
    from fsnet_mmdet.utils.io import save_atomic

    sizes = []
    for m, d in BSF_SIZES:
        model = build(VARIANTS[f'bsf-m{m}-d{d}'], str(tmp_path),
                      str(tmp_path / 'data'))
        packed = compress_bsf_state_dict(model.state_dict(), bsf_layers(model),
                                         {})
        sizes.append(save_atomic(packed, str(tmp_path / f'{m}-{d}.pth')))
    assert sizes == sorted(sizes) and sizes[-1] <= 276_897
    assert sizes[-1] > 0.98 * 276_897 and sizes[0] < 0.5 * 276_897


def test_finetune_config_is_the_from_dense_schedule(tmp_path):
    """250 iterations at lr 1e-3 with the from-dense warm-up and decay
    (configs/demo/fsnet_ssd300_demo_from_dense.py), over the written config."""
    from mmengine.config import Config

    base = tmp_path / 'compressed.py'
    base.write_text("optim_wrapper = dict(type='OptimWrapper', optimizer=dict("
                    "type='AdamW', lr=3e-3, weight_decay=1e-4))\n"
                    "train_cfg = dict(type='IterBasedTrainLoop', max_iters=750)\n"
                    "load_from = 'compressed.pth'\n")
    path = tmp_path / 'finetune.py'
    path.write_text(finetune_text(str(base), 'KSE', 3, 250))
    cfg = Config.fromfile(str(path))
    assert cfg.optim_wrapper.optimizer.lr == 1e-3
    assert cfg.optim_wrapper.optimizer.weight_decay == 1e-4
    assert cfg.train_cfg.max_iters == 250 and cfg.randomness.seed == 3
    assert cfg.load_from == 'compressed.pth'
    warm, cosine = cfg.param_scheduler
    assert (warm['type'], warm['start_factor'], warm['end']) == (
        'LinearLR', 0.1, 5)
    assert (cosine['begin'], cosine['end'], cosine['eta_min']) == (5, 250, 1e-5)
    path.write_text(finetune_text(str(base), 'KSE', 0, 4))
    assert Config.fromfile(str(path)).param_scheduler[0]['end'] == 2


# ------------------------------------------------------------------ FLOPs
def test_flops_of_a_tiny_model_by_hand():
    """Conv + BN + ReLU + max-pool + 1x1 conv on 8x8: a multiply-add per
    weight and output pixel (bias not counted), BN two per element in eval
    mode, ReLU and pooling nothing (mmengine.analysis, as get_flops.py)."""
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4),
                          nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(4, 5, 1))
    by_hand = 4 * 3 * 9 * 8 * 8 + 2 * 4 * 8 * 8 + 5 * 4 * 4 * 4
    assert count_flops(model, (8, 8)) == by_hand
    assert model.training  # the count runs in eval mode and restores


def test_flops_of_bsfconv_forwards_by_hand():
    """BSFConv's 'weight' forward counts as the dense conv it runs (building
    the weight is indexing and products); the split-transform-merge forward
    counts its grouped conv: G M maps of d k k multiply-adds per pixel."""
    from fsnet_mmdet.compression.bsf import BSFConv

    k, c, m, d = 6, 8, 5, 4
    for mode, by_hand in (('weight', k * c * 9 * 7 * 7),
                          ('stm', (c // d) * m * d * 9 * 7 * 7)):
        layer = BSFConv(c, k, 3, padding=1, bank_size=m, bank_channels=d,
                        forward_mode=mode)
        model = nn.Sequential(nn.Conv2d(3, c, 1, bias=False), layer)
        assert count_flops(model, (7, 7)) == c * 3 * 7 * 7 + by_hand


def test_flops_of_a_detector_by_hand():
    """The dense SSD300-BN at the demo width: every conv's and BatchNorm's
    count from the output shapes hooks record, summed (no other op counts)."""
    cfg = load_config(ROOT / 'tests' / 'configs' / 'ssd300_bn_tiny_narrow.py')
    model = build_detector(cfg).eval()
    counts = []

    def conv_hook(module, inputs, output):
        per_output = module.in_channels // module.groups * math.prod(
            module.kernel_size)
        counts.append(output.numel() * per_output)

    def norm_hook(module, inputs, output):
        counts.append(2 * inputs[0].numel())

    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            module.register_forward_hook(conv_hook)
        elif isinstance(module, nn.BatchNorm2d):
            module.register_forward_hook(norm_hook)
    with torch.no_grad():
        model(torch.zeros(1, 3, 300, 300))
    by_hand = sum(counts)
    assert count_flops(model) == by_hand


# ----------------------------------------------------------------- report
def test_summary_rows_are_mean_and_sample_std_over_seeds():
    fs = VARIANTS['fs-k3x1']
    maps, wq = [0.30, 0.36, 0.27], [0.29, 0.35, 0.28]
    runs = [dict(variant='fs-k3x1', seed=s, params=1000, bytes=4000,
                 s_iter=t, loss=l, mAP=m, mAP_wq=q, effective_wq=250,
                 bytes_wq=1100)
            for s, (m, q, t, l) in enumerate(zip(maps, wq, [1.0, 3.0, 2.0],
                                                 [5.0, 6.0, 7.0]))]
    runs.append(dict(runs[0], variant='dense-w0.25', mAP=0.9))  # another point
    rows = {r['name']: r for r in summarize([fs], runs)}
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
    assert (row['method'], row_wq['method']) == ('FS', 'FS-WQ')
    assert row['flops'] is None  # results written before FLOPs were counted


def test_summary_rows_of_compressed_points():
    """KSE's counts vary with the seed (its centroids follow the trained
    weights): the row takes their means; int8 and KSE rows show their
    schedules."""
    kse, int8 = VARIANTS['kse-as-fs-k3x1'], VARIANTS['dense-w0.25-int8']
    runs = [dict(variant=kse.name, seed=s, iters=750, finetune_iters=250,
                 source='dense-w0.25', params=p, effective=e, bytes=b,
                 flops=f, mAP=m, s_iter=0.5)
            for s, (p, e, b, f, m) in enumerate([
                (200, 210.5, 1000, 90, 0.4), (202, 211.5, 1010, 96, 0.5)])]
    runs.append(dict(variant=int8.name, seed=0, iters=750,
                     source='dense-w0.25', params=900, effective=300.25,
                     bytes=500, flops=120, mAP=0.6, s_iter=None))
    rows = {r['name']: r for r in summarize([kse, int8], runs)}
    row = rows[kse.name]
    assert (row['params'], row['bytes'], row['flops']) == (201, 1005, 93)
    assert row['effective'] == pytest.approx(211.0)
    assert (row['schedule'], row['method'], row['seeds']) == (
        '750 + 250', 'KSE', 2)
    row = rows[int8.name]
    assert (row['schedule'], row['method'], row['s_iter']) == (
        '750, then int8', 'dense int8', None)
    assert row['effective'] == 300.25


def _row(name, cost, mAP, std=0.0, method='x'):
    return dict(name=name, label=name, bytes=cost, flops=cost, mAP=mAP,
                std=std, method=method)


def test_pareto_front_and_clear_winners_by_hand():
    rows = [_row('a', 100, 0.50), _row('b', 200, 0.45),  # b: a is smaller, better
            _row('c', 300, 0.60, 0.02), _row('d', 300, 0.60),  # equal: both stay
            _row('e', 50, 0.30), _row('f', 400, 0.55)]
    assert pareto_front(rows, 'bytes') == ['a', 'c', 'd', 'e']
    ref = _row('wq', 250, 0.40, 0.04, 'FS-WQ')
    rows.append(ref)
    # At <= 250 bytes: a (+0.10 > 0.04), b (+0.05 > 0.04), e (lower).
    assert [r['name'] for r in clear_winners(rows, ref)] == ['a', 'b']
    ref['std'] = 0.08  # now only a clears one (the larger) std
    assert [r['name'] for r in clear_winners(rows, ref)] == ['a']
    notes = front_notes(rows)
    assert 'not on the bytes-vs-mAP Pareto front' in notes and 'a (100 bytes' in notes
    # Rows without a seed count have one: their std of 0 is said, by name.
    assert notes.endswith('One seed (std unknown, counted as 0): wq, a.')
    ref['seeds'] = rows[0]['seeds'] = 3
    notes = front_notes(rows)
    assert '0.500 +- 0.000, 3 seeds)' in notes and 'One seed' not in notes


def test_compare_table_orders_methods_and_marks_the_fronts():
    rows = [dict(_row('lrf', 900, 0.5, method='LRF'), params=90, effective=90,
                 schedule='750 + 250', s_iter=0.5, seeds=3),
            dict(_row('fs', 1000, 0.4, method='FS'), params=100, effective=100,
                 schedule='750', s_iter=1.0, seeds=3),
            dict(_row('fs-wq', 300, 0.4, method='FS-WQ'), params=100,
                 effective=25, schedule='750', s_iter=1.0, seeds=3)]
    rows[0]['flops'] = None  # uncounted: not on the FLOPs front, shown '-'
    lines = compare_table(rows).splitlines()
    assert [line.split(' | ')[0] for line in lines[2:]] == ['| FS', '| FS-WQ',
                                                            '| LRF']
    # FS: LRF has fewer bytes and a higher mAP; LRF's FLOPs are unknown.
    assert lines[2].endswith('| FLOPs |')
    assert lines[3].endswith('| bytes, FLOPs |')
    assert lines[4].endswith('| bytes |') and '| - | 750 + 250 |' in lines[4]
