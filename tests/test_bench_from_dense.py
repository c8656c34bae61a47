"""benchmarks/bench_from_dense.py at tiny scale (--quick): real tools, resumable."""
import json

from conftest import run_tool


def test_quick_from_dense_benchmark_runs_every_step_and_resumes(tmp_path):
    work = tmp_path / 'bench'
    args = ['benchmarks/bench_from_dense.py', '--quick', '--methods',
            'fsshrink-kd', 'recon', '--work-dir', work]
    result = run_tool(*args, timeout=900)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    report = json.loads((work / 'docs' / 'results.json').read_text())
    teacher, (run, recon) = report['teacher'], report['runs']
    for key in ('mAP', 'converted', 'converted_bn'):
        assert 0 <= teacher[key] <= 1
    assert (run['method'], run['extra'], run['reg_iters'], run['tune_iters']) \
        == ('fsshrink-kd', 6, 4, 2)
    for key in ('regularized', 'projected', 'projected_bn', 'mAP', 'mAP_wq'):
        assert 0 <= run[key] <= 1
    # Four shrinks, ramped to rate 0.1: the residual after regularization is
    # below its start.
    residuals = json.loads((work / 'fsshrink-kd-extra6' / 'seed0' / 'reg' /
                            'fs_residuals.json').read_text())
    assert residuals['final']['total'] < residuals['history'][0]['total']
    assert run['residual'] == residuals['final']['total']
    log = (work / 'fsshrink-kd-extra6' / 'seed0' / 'log.txt').read_text()
    assert 'FSDistillationHook: teacher' in log and 'loss_cwd' in log
    assert 'BatchNorm statistics re-estimated on 25 training batches' in log
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
