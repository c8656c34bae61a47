"""FS from a trained dense detector: structural regularization, then projection.

On the demo's data and recipe, through the real tools:

1. the teacher: the dense SSD300-BN at the demo width
   (``configs/demo/ssd300_bn_demo.py``) trained ``--teacher-iters`` (750)
   iterations, seed 0, and tested; one teacher serves every seed below;
2. the baseline: the teacher projected onto the FS model by least squares
   (``tools/convert.py``) and tested as is, and with BatchNorm re-estimated
   (training-free);
3. per extra budget B (``--extra``, e.g. 250 and 750) and seed: the
   ``fsreg`` path, B iterations in all:
   a. ``configs/demo/fsreg_ssd300_demo.py``: round(``--reg-fraction`` x B)
      iterations of the teacher's fine-tuning with the structural
      regularizer (``FSRegularizationHook``, options per method:
      :data:`METHODS`), tested (dense);
   b. the projection (``tools/convert.py``), tested: the mAP right after it;
      again with BatchNorm re-estimated on 25 training batches
      (``--recalibrate-bn``), tested;
   c. ``configs/demo/fsnet_ssd300_demo_from_dense.py``: the rest of B as FS,
      tested; then WQ (``tools/quantize.py``) and tested.
4. FS trained from scratch, from the committed accuracy results
   (``docs/accuracy``): at 750 and 1500 iterations.

Finished runs are skipped (each writes ``result.json``). Writes, under
``--docs``: ``results.md`` (the table), ``results.json`` and
``map_vs_iterations.png``.

    python benchmarks/bench_from_dense.py --extra 250 750 --seeds 0 1 2
    python benchmarks/bench_from_dense.py --quick       # tiny, for the tests

``--detector retinanet`` runs the same path on a second detector
(``configs/demo/retinanet_r18_demo.py``: RetinaNet, ResNet-18 x 1/4, FPN 64;
its FS twin made by ``fs_convert``), training its FS-from-scratch reference
too (seed 0), into ``docs/accuracy/from-dense-retinanet``.
"""
import argparse
import dataclasses
import json
import os
import statistics
import sys
import time
from typing import Dict, List, Optional

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from fsnet_mmdet.tools.pipeline import (map_of, run_tool, schedule_text,  # noqa: E402
                                        seconds_per_iteration,
                                        train_resumable)
from fsnet_mmdet.utils.io import write_json_atomic  # noqa: E402

DEMO = os.path.join(ROOT, 'configs', 'demo')


@dataclasses.dataclass(frozen=True)
class Detector:
    """The configs of one detector's from-dense path (``configs/demo``).

    Attributes:
        label: the teacher, for the table and the plot.
        teacher: the dense config.
        fs: its FS twin (what the teacher is projected into).
        finetune: the FS fine-tuning config (``load_from`` the projection).
        wq: the FS config with 8-bit summaries.
        reg: the structural-regularization config, or None (the ``fsreg`` /
            ``fsshrink`` methods are then refused).
        scratch_results: read FS-from-scratch results from the committed
            accuracy benchmark (:data:`SCRATCH`); else the FS config is
            trained from scratch for the teacher's iterations, seed 0.
    """

    label: str
    teacher: str
    fs: str
    finetune: str
    wq: str
    reg: Optional[str] = None
    scratch_results: bool = False


DETECTORS = {
    'ssd300': Detector(
        'dense SSD300-BN, width 0.25', *(os.path.join(DEMO, f) for f in (
            'ssd300_bn_demo.py', 'fsnet_ssd300_demo.py',
            'fsnet_ssd300_demo_from_dense.py', 'fsnet_ssd300_demo_wq.py',
            'fsreg_ssd300_demo.py')), scratch_results=True),
    'retinanet': Detector(
        'dense RetinaNet, ResNet-18 x 1/4, FPN 64', *(
            os.path.join(DEMO, f) for f in (
                'retinanet_r18_demo.py', 'fsnet_retinanet_r18_demo.py',
                'fsnet_retinanet_r18_demo_from_dense.py',
                'fsnet_retinanet_r18_demo_wq.py'))),
}
#: FS K3 x 1 pred_interleave (the demo FS model) trained from scratch:
#: (results file, iterations); read, not rerun.
SCRATCH = [('docs/accuracy/h100/results.json', 750),
           ('docs/accuracy/iters1500/results.json', 1500)]
SCRATCH_VARIANT = 'fs-k3x1-interleave'
#: Training batches (of 8 images) that re-estimate BatchNorm after a projection.
BN_BATCHES = 25


@dataclasses.dataclass(frozen=True)
class Method:
    """One compression path.

    Attributes:
        label: what it does, for the table.
        reg: FSRegularizationHook options over the config's for the
            regularization stage, or None for no such stage (the teacher is
            projected at once and all the extra iterations fine-tune FS).
        reconstruct: fit the projected FS convs to the dense model's outputs
            (``tools/convert.py --reconstruct``) before re-estimating BN.
        kd: distil the teacher (CWD on the neck outputs) in every stage.
        compress: not FS: ``tools/compress.py --method`` (``'kse'``,
            ``'lrf'``) of the teacher to the FS model's parameter count,
            then the extra iterations fine-tune the result.
    """

    label: str
    reg: Optional[dict] = None
    reconstruct: bool = False
    kd: bool = False
    compress: Optional[str] = None


_SHRINK = dict(lam=None, shrink=(1e-3, 0.1))
METHODS = {
    'fsreg': Method('structural regularization in the loss (lam 0.1 -> 100), '
                    'projected, fine-tuned as FS', dict(lam=(0.1, 100.0),
                                                        shrink=None)),
    'fsshrink': Method('decoupled shrinking towards the projection (rate '
                       '1e-3 -> 0.1), projected, fine-tuned as FS', _SHRINK),
    'fsshrink-kd': Method('fsshrink, distilling the teacher (CWD)', _SHRINK,
                          kd=True),
    'recon': Method('projected, output reconstruction on 4 training batches, '
                    'fine-tuned as FS', reconstruct=True),
    'recon-kd': Method('recon, distilling the teacher (CWD) while fine-tuning',
                       reconstruct=True, kd=True),
    'kse': Method('not FS: KSE (kernel clustering, Li et al. 2019) of the '
                  'teacher to the FS model\'s parameter count, fine-tuned',
                  compress='kse'),
    'lrf': Method('not FS: LRF (channel pruning, Joo et al. 2021) of the '
                  'teacher to the FS model\'s parameter count, fine-tuned',
                  compress='lrf'),
}
KD_WEIGHT = 3.0
#: Training batches the output reconstruction fits on.
RECON_BATCHES = 4


def config(path: str, base: str, data_root: str, seed: int, iters: int,
           extra: str = '', warmup: Optional[int] = None,
           schedule_from: Optional[str] = None) -> str:
    """Write a config: ``base`` with the data, seed and schedule length set.

    The schedule keeps the base's shape (linear warm-up, then cosine to its
    ``eta_min``; or ``schedule_from``'s) and learning rate, stretched to
    ``iters``.
    """
    from mmengine.config import Config

    schedule = Config.fromfile(schedule_from or base).param_scheduler
    warm = warmup if warmup is not None else min(schedule[0]['end'], iters // 2)
    text = (f"# Generated by benchmarks/bench_from_dense.py\n_base_ = {base!r}\n"
            + schedule_text(seed, iters, warm, schedule[0]['start_factor'],
                            schedule[1]['eta_min'], data_root) + extra)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, 'w') as f:
        f.write(text)
    return path


class Steps:
    """Runs tools into one log and one work dir."""

    def __init__(self, run: str, what: str) -> None:
        self.run, self.what = run, what
        self.log = os.path.join(run, 'log.txt')
        os.makedirs(run, exist_ok=True)

    def tool(self, *args) -> None:
        run_tool(*args, log=self.log, what=self.what)

    def train(self, cfg: str, name: str, *options: str) -> str:
        return train_resumable(cfg, os.path.join(self.run, name), *options,
                               log=self.log, what=self.what)

    def test(self, cfg: str, checkpoint: str, name: str) -> float:
        work = os.path.join(self.run, name)
        self.tool('tools/test.py', cfg, checkpoint, '--work-dir', work)
        return map_of(work)


def teacher(det: Detector, work: str, data_root: str, iters: int,
            bn_batches: int = BN_BATCHES) -> dict:
    """Train and test the dense teacher once; its checkpoint stays in ``work``.
    The projection is tested as is and with BatchNorm re-estimated on
    ``bn_batches`` training batches.
    Without committed FS-from-scratch results, FS is also trained from
    scratch as long (seed 0): ``result['scratch']``."""
    run = os.path.join(work, 'teacher')
    path = os.path.join(run, 'result.json')
    if os.path.exists(path):
        result = json.load(open(path))
        if 'int8' not in result:  # a teacher run before the int8 row
            result.update(int8_row(run, result['config'], result['checkpoint']))
            write_json_atomic(path, result)
        return result
    start, steps = time.time(), Steps(run, 'bench_from_dense teacher')
    train_dir = os.path.join(run, 'train')
    cfg = config(os.path.join(run, 'dense.py'), det.teacher, data_root, 0,
                 iters)
    ckpt = steps.train(cfg, 'train')
    fs_cfg = config(os.path.join(run, 'fs.py'), det.fs, data_root, 0, iters)
    converted = os.path.join(run, 'converted.pth')
    steps.tool('tools/convert.py', fs_cfg, ckpt, converted)
    result = dict(checkpoint=ckpt, config=cfg, iters=iters,
                  s_iter=seconds_per_iteration(train_dir),
                  mAP=steps.test(cfg, ckpt, 'test'),
                  converted=steps.test(fs_cfg, converted, 'test_converted'))
    steps.tool('tools/convert.py', fs_cfg, ckpt, converted, '--recalibrate-bn',
               str(bn_batches))
    result['bn_batches'] = bn_batches
    result['converted_bn'] = steps.test(fs_cfg, converted, 'test_converted_bn')
    os.remove(converted)
    result.update(int8_row(run, cfg, ckpt))
    if not det.scratch_results:
        scratch = steps.train(fs_cfg, 'scratch')
        result['scratch'] = steps.test(fs_cfg, scratch, 'test_scratch')
        os.remove(scratch)
    result['wall_s'] = time.time() - start
    write_json_atomic(path, result)
    return result


def int8_row(run: str, cfg: str, ckpt: str) -> dict:
    """The teacher with int8 weights (``tools/quantize_int8.py``), tested:
    no training; its file bytes."""
    steps = Steps(run, 'bench_from_dense teacher int8')
    out = os.path.join(run, 'int8.pth')
    steps.tool('tools/quantize_int8.py', cfg, ckpt, out)
    row = dict(int8=steps.test(cfg, out, 'test_int8'),
               bytes_int8=os.path.getsize(out))
    os.remove(out)
    return row


def fs_params(det: 'Detector') -> int:
    """Stored parameters of the detector's FS model (the size KSE and LRF
    are compressed to)."""
    from fsnet_mmdet.layers.accounting import count_params
    from fsnet_mmdet.tools.count_params import build_model_from_config
    return count_params(build_model_from_config(det.fs)).stored


def other(det: 'Detector', work: str, data_root: str, teach: dict,
          method: str, extra: int, seed: int) -> dict:
    """A compression other than FS from the same teacher with the same
    budget: ``tools/compress.py`` to the FS model's parameter count, tested,
    then ``extra`` iterations fine-tuning on the FS fine-tuning schedule
    (``det.finetune``: its learning rate, warm-up and floor), tested."""
    run = os.path.join(work, f'{method}-extra{extra}', f'seed{seed}')
    path = os.path.join(run, 'result.json')
    if os.path.exists(path):
        return json.load(open(path))
    from mmengine.config import Config

    start = time.time()
    steps = Steps(run, f'bench_from_dense {method} extra {extra} seed {seed}')
    out = os.path.join(run, 'compressed')
    target = fs_params(det)
    steps.tool('tools/compress.py', teach['config'], teach['checkpoint'],
               '--method', METHODS[method].compress, '--target', str(target),
               '--out-dir', out, '--seed', str(seed))
    compressed = os.path.join(out, 'checkpoint.pth')
    info = json.load(open(os.path.join(out, 'report.json')))
    result = dict(method=method, seed=seed, extra=extra, reg_iters=0,
                  tune_iters=extra, residual=None, target_params=target,
                  params=info['after']['params'],
                  effective_params=info['after']['effective_params'],
                  flops=info['after']['flops'], flops_dense=info['before']['flops'],
                  settings=info['settings'],
                  projected=steps.test(os.path.join(out, 'config.py'),
                                       compressed, 'test_compressed'),
                  projected_bn=None)
    tune = Config.fromfile(det.finetune)
    tune_cfg = config(
        os.path.join(run, 'tune.py'), os.path.join(out, 'config.py'),
        data_root, seed, extra,
        f'load_from = {compressed!r}\n'
        f'optim_wrapper = dict(optimizer=dict(lr={tune.optim_wrapper.optimizer.lr!r}))\n',
        warmup=tune.param_scheduler[0]['end'], schedule_from=det.finetune)
    tuned = steps.train(tune_cfg, 'tune')
    result.update(mAP=steps.test(tune_cfg, tuned, 'test'), mAP_wq=None,
                  bytes=info['checkpoint_bytes'])
    for p in (compressed, tuned):
        os.remove(p)  # keep results, not weights
    result['wall_s'] = time.time() - start
    write_json_atomic(path, result)
    return result


def hooks_text(base: str, reg: Optional[dict], teacher: Optional[dict]) -> str:
    """Config text: ``base``'s custom hooks with the FSRegularizationHook
    options ``reg`` and, given the teacher, the distillation hook added."""
    from mmengine.config import Config

    hooks = Config.fromfile(base).to_dict().get('custom_hooks', [])
    for hook in hooks:
        if hook['type'] == 'FSRegularizationHook' and reg:
            hook.update(reg)
    if teacher:
        hooks.append(dict(type='FSDistillationHook',
                          teacher_config=teacher['config'],
                          teacher_checkpoint=teacher['checkpoint'],
                          weight=KD_WEIGHT))
    return f'custom_hooks = {hooks!r}\n'


def fsreg(det: Detector, work: str, data_root: str, teach: dict, method: str,
          extra: int,
          reg_fraction: float, seed: int,
          recon_batches: int = RECON_BATCHES,
          bn_batches: int = BN_BATCHES) -> dict:
    """The regularize -> project -> fine-tune path ``method`` (a key of
    :data:`METHODS`) with ``extra`` iterations in all."""
    run = os.path.join(work, f'{method}-extra{extra}', f'seed{seed}')
    path = os.path.join(run, 'result.json')
    if os.path.exists(path):
        return json.load(open(path))
    start = time.time()
    steps = Steps(run, f'bench_from_dense {method} extra {extra} seed {seed}')
    m = METHODS[method]
    distil = teach if m.kd else None
    reg_iters = max(2, min(extra - 2, round(reg_fraction * extra))) if (
        m.reg is not None) else 0
    tune_iters = extra - reg_iters
    result = dict(method=method, seed=seed, extra=extra, reg_iters=reg_iters,
                  tune_iters=tune_iters, residual=None, regularized=None)
    source = teach['checkpoint']
    if m.reg is not None:
        reg_cfg = config(os.path.join(run, 'reg.py'), det.reg, data_root,
                         seed, reg_iters, f'load_from = {source!r}\n'
                         + hooks_text(det.reg, m.reg, distil))
        source = steps.train(reg_cfg, 'reg')
        residuals = json.load(open(os.path.join(run, 'reg',
                                                'fs_residuals.json')))
        result.update(residual=residuals['final']['total'],
                      regularized=steps.test(reg_cfg, source, 'test_reg'))
    fs_cfg = config(os.path.join(run, 'fs.py'), det.fs, data_root, seed, 2)
    projected = os.path.join(run, 'projected.pth')
    steps.tool('tools/convert.py', fs_cfg, source, projected)
    result['projected'] = steps.test(fs_cfg, projected, 'test_projected')
    # The fine-tuning starts from the projection (reconstructed, for the
    # methods that do) with re-estimated BN.
    steps.tool('tools/convert.py', fs_cfg, source, projected,
               '--recalibrate-bn', str(bn_batches),
               *(['--reconstruct', str(recon_batches)] if m.reconstruct else []))
    result['projected_bn'] = steps.test(fs_cfg, projected, 'test_projected_bn')
    tune_cfg = config(os.path.join(run, 'tune.py'), det.finetune, data_root,
                      seed, tune_iters, f'load_from = {projected!r}\n'
                      + (hooks_text(det.finetune, None, distil) if m.kd else ''))
    tuned = steps.train(tune_cfg, 'tune')
    wq_cfg = config(os.path.join(run, 'wq.py'), det.wq, data_root, seed, 2)
    wq = os.path.join(run, 'weights_wq.pth')
    steps.tool('tools/quantize.py', tune_cfg, tuned, wq)
    result.update(mAP=steps.test(tune_cfg, tuned, 'test'),
                  mAP_wq=steps.test(wq_cfg, wq, 'test_wq'),
                  bytes_wq=os.path.getsize(wq))
    for p in {source, projected, tuned, wq} - {teach['checkpoint']}:
        os.remove(p)  # keep results, not weights
    result['wall_s'] = time.time() - start
    write_json_atomic(path, result)
    return result


def scratch_maps() -> Dict[int, List[float]]:
    """{iterations: [mAP per seed]} of FS from scratch in the committed results."""
    out = {}
    for rel, iters in SCRATCH:
        data = json.load(open(os.path.join(ROOT, rel)))
        runs = data['runs'] if isinstance(data, dict) else data
        maps = [r['mAP'] for r in runs if r.get('variant') == SCRATCH_VARIANT
                and r.get('iters') == iters and r.get('mAP') is not None]
        if maps:
            out[iters] = maps
    return out


def cell(values: List[float]) -> str:
    if not values:
        return '-'
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return (f'{statistics.mean(values):.3f} +- {std:.3f} ('
            + ', '.join(f'{v:.3f}' for v in values) + ')')


def report(det: Detector, teach: dict, runs: List[dict],
           scratch: Dict[int, List[float]], command: str) -> str:
    t, bn = teach['iters'], teach.get('bn_batches', BN_BATCHES)
    lines = ['| model | total iterations | residual | mAP after projection '
             '| mAP | WQ | wall min / run |', '|---|---|---|---|---|---|---|',
             f'| teacher: {det.label} | {t} | | | {teach["mAP"]:.3f} | | '
             f'{teach["s_iter"] * t / 60:.0f} (training) |',
             f'| teacher projected by least squares (no training) | {t} | | '
             f'{teach["converted"]:.3f} | | | |',
             f'| ... with BatchNorm re-estimated ({bn} batches, no '
             f'training) | {t} | | {teach["converted_bn"]:.3f} | | | |']
    if 'int8' in teach:
        lines.append(f'| teacher, int8 weights ({teach["bytes_int8"]:,} bytes; '
                     f'no training) | {t} | | | {teach["int8"]:.3f} | | |')
    for method, extra in sorted({(r['method'], r['extra']) for r in runs}):
        rs = [r for r in runs if (r['method'], r['extra']) == (method, extra)]
        if METHODS[method].compress:
            r0 = rs[0]
            lines.append(
                f'| {method}: compressed to {r0["params"]:,} parameters '
                f'({r0["effective_params"]:,.0f} with index bits; FLOPs '
                f'{r0["flops_dense"] / r0["flops"]:.2f}x fewer), then '
                f'{r0["tune_iters"]} iterations | {t} + {extra} | - | '
                f'{cell([r["projected"] for r in rs])} | '
                f'{cell([r["mAP"] for r in rs])} | - | '
                f'{statistics.mean(r["wall_s"] for r in rs) / 60:.0f} |')
            continue
        lines.append(
            f'| {method}: {rs[0]["reg_iters"]} regularized + '
            f'{rs[0]["tune_iters"]} FS iterations | {t} + {extra} | '
            + (f'{statistics.mean(r["residual"] for r in rs):.3f}'
               if rs[0]['residual'] is not None else '-') + ' | '
            f'{cell([r["projected"] for r in rs])}; '
            + ('reconstructed + ' if METHODS[method].reconstruct else '')
            + f'BN re-estimated '
            f'{cell([r["projected_bn"] for r in rs])} | '
            f'{cell([r["mAP"] for r in rs])} | '
            f'{cell([r["mAP_wq"] for r in rs])} | '
            f'{statistics.mean(r["wall_s"] for r in rs) / 60:.0f} |')
    for iters, maps in sorted(scratch.items()):
        lines.append(f'| FS from scratch ('
                     + ('committed results' if det.scratch_results else
                        'seed 0, this benchmark') + f') | {iters} | | | '
                     f'{cell(maps)} | | |')
    return ('\n'.join(lines) + f'\n\nCommand: `{command}`. Teacher: seed 0; '
            f'each path\'s row: mean +- std over seeds (per seed); '
            + '; '.join(f'{m}: {d.label}' for m, d in METHODS.items())
            + f'. Residual: '
            f'sqrt(sum ||W - P(W)||^2 / sum ||W||^2) over the FS layers at the '
            f'end of regularization.'
            + (' FS from scratch at 750 iterations: the H100 runs, at 1500: '
               'CPU runs (docs/accuracy).' if det.scratch_results else '')
            + '\n')


def plot(det: Detector, teach: dict, runs: List[dict],
         scratch: Dict[int, List[float]], out: str) -> None:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 4.5))
    t = teach['iters']
    ax.plot([t], [teach['mAP']], 'ks', label=f'teacher ({det.label})')
    ax.plot([t], [teach['converted']], 'kx',
            label='teacher projected, no training')
    if scratch:
        its = sorted(scratch)
        ax.errorbar(its, [statistics.mean(scratch[i]) for i in its],
                    [statistics.stdev(scratch[i]) if len(scratch[i]) > 1 else 0
                     for i in its], fmt='o--', capsize=3,
                    label='FS from scratch')
    for method in sorted({r['method'] for r in runs}):
        extras = sorted({r['extra'] for r in runs if r['method'] == method})
        after = 'projected' if METHODS[method].compress else 'projected_bn'
        for key, label, fmt in (('mAP', 'after fine-tuning', 'o-'),
                                (after, 'right after compression' + (
                                    '' if METHODS[method].compress else
                                    ' (BN re-estimated)'), 'v:')):
            vals = [[r[key] for r in runs if (r['method'], r['extra']) ==
                     (method, e)] for e in extras]
            ax.errorbar([t + e for e in extras],
                        [statistics.mean(v) for v in vals],
                        [statistics.stdev(v) if len(v) > 1 else 0 for v in vals],
                        fmt=fmt, capsize=3, label=f'{method}, {label}')
    ax.set_xlabel('training iterations in all (batch 8)')
    ax.set_ylabel('VOC mAP@0.5 (demo data)')
    ax.set_title(f'FS K3 x 1 from a trained {det.label} (demo scale)')
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc='upper left', bbox_to_anchor=(1.01, 1))
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--detector', default='ssd300', choices=sorted(DETECTORS),
                        help='ssd300: configs/demo/ssd300_bn_demo.py; '
                        'retinanet: configs/demo/retinanet_r18_demo.py')
    parser.add_argument('--extra', nargs='+', type=int, default=[250, 750],
                        help='iterations after the teacher\'s, per path')
    parser.add_argument('--seeds', nargs='+', type=int, default=[0, 1, 2])
    parser.add_argument('--methods', nargs='+', default=['fsshrink'],
                        choices=sorted(METHODS),
                        help='; '.join(f'{m}: {d.label}' for m, d in METHODS.items()))
    parser.add_argument('--teacher-iters', type=int, default=750)
    parser.add_argument('--reg-fraction', type=float, default=0.8,
                        help='share of the extra iterations spent regularizing '
                        '(the rest fine-tunes the projected FS model)')
    parser.add_argument('--data-root', default='data/demo/VOCdevkit')
    parser.add_argument('--work-dir', default=None)
    parser.add_argument('--docs', default=None,
                        help='default: docs/accuracy/from-dense')
    parser.add_argument('--report-only', action='store_true',
                        help='train nothing: write the table of the runs '
                        'finished so far')
    parser.add_argument('--quick', action='store_true',
                        help='tiny scale (8 images, a few iterations, 1 seed) '
                        'in the work dir: for the tests')
    args = parser.parse_args(argv)
    if any(e < 4 for e in args.extra):
        parser.error(f'--extra: every budget must be >= 4 (at least 2 '
                     f'iterations to regularize, then 2 to fine-tune), got '
                     f'{args.extra}')
    if not 0 < args.reg_fraction < 1:
        parser.error(f'--reg-fraction must be in (0, 1), got {args.reg_fraction}')
    det = DETECTORS[args.detector]
    if args.detector != 'ssd300' and any(METHODS[m].compress for m in args.methods):
        parser.error('--methods kse, lrf: tools/compress.py handles SSD300 '
                     'only (LRF follows its channel graph); use them with '
                     '--detector ssd300')
    needs_reg = [m for m in args.methods if METHODS[m].reg is not None]
    if needs_reg and det.reg is None:
        parser.error(f'--methods {" ".join(needs_reg)}: no structural-'
                     f'regularization config for --detector {args.detector}; '
                     f'allowed: recon, recon-kd')
    suffix = '' if args.detector == 'ssd300' else f'-{args.detector}'

    from fsnet_mmdet.datasets.synthetic_voc import SyntheticVOCSpec, ensure_dataset

    start = time.time()
    spec = SyntheticVOCSpec()
    if args.quick:
        spec = SyntheticVOCSpec(num_trainval=8, num_test=4)
        args.extra, args.seeds, args.teacher_iters = [6], [0], 4
    work = os.path.abspath(args.work_dir or os.path.join(
        ROOT, 'work_dirs', 'bench_from_dense' + suffix.replace('-', '_')
        + ('_quick' if args.quick else '')))
    docs = os.path.abspath(args.docs or (
        os.path.join(work, 'docs') if args.quick
        else os.path.join(ROOT, 'docs', 'accuracy', 'from-dense' + suffix)))
    data_root = os.path.abspath(os.path.join(work, 'data') if args.quick
                                else args.data_root)
    ensure_dataset(data_root, spec)
    print(f'bench_from_dense: teacher {args.teacher_iters} iterations, then '
          f'{len(args.extra) * len(args.seeds) * len(args.methods)} '
          f'compression runs; work in {work}',
          flush=True)
    # --quick: 8 training images, a re-estimate of BN on 2 batches of them.
    bn_batches = 2 if args.quick else BN_BATCHES
    teach = teacher(det, work, data_root, args.teacher_iters, bn_batches)
    print(f'teacher: mAP {teach["mAP"]:.3f}, projected without training '
          f'{teach["converted"]:.3f} (BN re-estimated '
          f'{teach["converted_bn"]:.3f})', flush=True)
    # Seed-major: every path gets its first seed before any gets a second.
    jobs = [(m, e, s) for s in args.seeds for e in args.extra
            for m in args.methods]
    runs, done_s, done_iters = [], 0.0, 0
    for i, (method, extra, seed) in enumerate(jobs, 1):
        left = sum(e for _, e, _ in jobs[i - 1:])
        eta = (f', ETA {done_s / done_iters * left / 60:.0f} min'
               if done_iters else '')
        print(f'[{i}/{len(jobs)}] {method} extra {extra} seed {seed}{eta}',
              flush=True)
        t0 = time.time()
        fresh = not os.path.exists(os.path.join(
            work, f'{method}-extra{extra}', f'seed{seed}', 'result.json'))
        if fresh and args.report_only:
            continue
        if METHODS[method].compress:
            r = other(det, work, data_root, teach, method, extra, seed)
        else:
            r = fsreg(det, work, data_root, teach, method, extra,
                      args.reg_fraction, seed, 1 if args.quick else RECON_BATCHES,
                      bn_batches)
        if fresh:
            done_s, done_iters = done_s + time.time() - t0, done_iters + extra
        runs.append(r)
        def num(value):
            return '-' if value is None else f'{value:.3f}'
        print(f'    residual {num(r["residual"])}; projected / compressed '
              f'{num(r["projected"])} (BN {num(r["projected_bn"])}), '
              f'fine-tuned {num(r["mAP"])}, WQ {num(r["mAP_wq"])}, '
              f'{r["wall_s"] / 60:.1f} min', flush=True)
    scratch = ({} if args.quick else scratch_maps()) if det.scratch_results else (
        {teach['iters']: [teach['scratch']]})
    # The command that makes (or resumes) these runs; --report-only only
    # rewrites the table from the finished ones.
    command = 'python benchmarks/bench_from_dense.py ' + ' '.join(
        a for a in (argv if argv is not None else sys.argv[1:])
        if a != '--report-only')
    text = report(det, teach, runs, scratch, command.strip())
    os.makedirs(docs, exist_ok=True)
    with open(os.path.join(docs, 'results.md'), 'w') as f:
        f.write(text)
    write_json_atomic(os.path.join(docs, 'results.json'),
                      dict(command=command.strip(), teacher=teach, runs=runs,
                           scratch=scratch))
    plot(det, teach, runs, scratch, os.path.join(docs, 'map_vs_iterations.png'))
    print('\n' + text + f'bench_from_dense: wall time '
          f'{(time.time() - start) / 60:.1f} min; results in {docs}')


if __name__ == '__main__':
    main()
