"""benchmarks/bench_from_dense.py at tiny scale (--quick): real tools, resumable."""
import json

import pytest

from conftest import run_tool
from fsnet_mmdet.tools.pipeline import map_of


def _assert_maps_are_the_runs(run_dir, reported, test_dirs):
    """``reported[key]`` (the report's) is the run's own mAP, for every
    ``key``: the number in ``run_dir``'s result.json and the one
    tools/test.py wrote in ``run_dir / test_dirs[key]``."""
    result = json.loads((run_dir / 'result.json').read_text())
    for key, test_dir in test_dirs.items():
        measured = map_of(str(run_dir / test_dir))
        assert reported[key] == result[key] == measured, key


@pytest.mark.e2e(seconds=390)
def test_quick_from_dense_benchmark_runs_every_step_and_resumes(tmp_path):
    work = tmp_path / 'bench'
    args = ['benchmarks/bench_from_dense.py', '--quick', '--methods',
            'fsshrink-kd', 'recon', '--work-dir', work]
    result = run_tool(*args, timeout=900)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    report = json.loads((work / 'docs' / 'results.json').read_text())
    teacher, (run, recon) = report['teacher'], report['runs']
    # Every reported mAP is the run's own: its result.json's and the number
    # tools/test.py wrote in that step's test directory.
    _assert_maps_are_the_runs(work / 'teacher', teacher, {
        'mAP': 'test', 'converted': 'test_converted',
        'converted_bn': 'test_converted_bn', 'int8': 'test_int8'})
    assert teacher['bytes_int8'] > 0 and not list(work.glob('teacher/int8.pth'))
    assert (run['method'], run['extra'], run['reg_iters'], run['tune_iters']) \
        == ('fsshrink-kd', 6, 4, 2)
    _assert_maps_are_the_runs(work / 'fsshrink-kd-extra6' / 'seed0', run, {
        'regularized': 'test_reg', 'projected': 'test_projected',
        'projected_bn': 'test_projected_bn', 'mAP': 'test',
        'mAP_wq': 'test_wq'})
    # Four shrinks, ramped to rate 0.1: the residual after regularization is
    # below its start.
    residuals = json.loads((work / 'fsshrink-kd-extra6' / 'seed0' / 'reg' /
                            'fs_residuals.json').read_text())
    assert residuals['final']['total'] < residuals['history'][0]['total']
    assert run['residual'] == residuals['final']['total']
    log = (work / 'fsshrink-kd-extra6' / 'seed0' / 'log.txt').read_text()
    assert 'FSDistillationHook: teacher' in log and 'loss_cwd' in log
    assert 'BatchNorm statistics re-estimated on 2 training batches' in log
    assert run['bytes_wq'] > 0 and not list(work.glob('**/fsshrink-kd-extra6/**/*.pth'))
    # recon: no regularization stage, the output fit before fine-tuning.
    assert (recon['method'], recon['reg_iters'], recon['tune_iters'],
            recon['residual']) == ('recon', 0, 6, None)
    log = (work / 'recon-extra6' / 'seed0' / 'log.txt').read_text()
    assert 'output error ||Y_fs - Y|| / ||Y||: projected -> reconstructed' in log
    table = (work / 'docs' / 'results.md').read_text()
    assert '| fsshrink-kd: 4 regularized + 2 FS iterations | 4 + 6 |' in table
    assert '| recon: 0 regularized + 6 FS iterations | 4 + 6 | - |' in table
    assert (work / 'docs' / 'map_vs_iterations.png').stat().st_size > 10_000

    again = run_tool(*args, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    assert (work / 'docs' / 'results.md').read_text().split('\n\nCommand')[0] \
        == table.split('\n\nCommand')[0]


@pytest.mark.e2e
def test_retinanet_path_refuses_the_methods_it_has_no_config_for(tmp_path):
    result = run_tool('benchmarks/bench_from_dense.py', '--detector', 'retinanet',
                      '--methods', 'recon', 'fsshrink', '--work-dir', tmp_path)
    assert result.returncode == 2
    assert ('--methods fsshrink: no structural-regularization config for '
            '--detector retinanet; allowed: recon, recon-kd') in result.stderr
    assert not list(tmp_path.iterdir())


def test_retinanet_demo_configs_are_twins(tmp_path, monkeypatch):
    """configs/demo/*retinanet_r18*: the FS twin has an FS conv for every
    dense conv of the teacher (same names and shapes: the projection and the
    reconstruction pair them up), the WQ config quantizes every summary, and
    all four pass the tools' config check."""
    from torch import nn

    from conftest import ROOT, VOC_ROOT, build_detector, load_config
    from fsnet_mmdet import FSConv
    from fsnet_mmdet.conversion.reconstruction import dense_twin
    from fsnet_mmdet.engine.validate import check_config

    (tmp_path / 'data' / 'demo').mkdir(parents=True)
    (tmp_path / 'data' / 'demo' / 'VOCdevkit').symlink_to(VOC_ROOT)
    monkeypatch.chdir(tmp_path)
    demo = ROOT / 'configs' / 'demo'
    names = ('retinanet_r18_demo.py', 'fsnet_retinanet_r18_demo.py',
             'fsnet_retinanet_r18_demo_from_dense.py',
             'fsnet_retinanet_r18_demo_wq.py')
    for name in names:
        check_config(load_config(demo / name), name, training=True)
    dense, fs, wq = (build_detector(load_config(demo / n))
                     for n in (names[0], names[1], names[3]))
    convs = {n: m.weight.shape for n, m in dense.named_modules()
             if isinstance(m, nn.Conv2d)}
    fs_convs = {n: m for n, m in fs.named_modules() if isinstance(m, FSConv)}
    assert len(convs) == 34 and set(fs_convs) == set(convs)
    assert all(tuple(m.index.shape) == tuple(convs[n]) for n, m in fs_convs.items())
    assert all(m.wq for m in wq.modules() if isinstance(m, FSConv))
    twin = dense_twin(fs, dense.state_dict())
    assert not any(isinstance(m, FSConv) for m in twin.modules())
