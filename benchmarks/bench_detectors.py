"""FS in the detectors people use: RetinaNet, RTMDet-tiny, Faster R-CNN (issue 31).

Trains each detector's demo recipe (configs/demo/: dense, its FS twin made by
``fs_convert`` only, and the dense model thinned to FS's parameter count) on
the demo data from scratch with the same schedule, tests it, and for FS also
its WQ checkpoint (``tools/quantize.py``), per seed; and the diagnosis runs of
docs/detectors.md (one change each). Every run is a step of
``tools/train.py`` / ``tools/test.py`` resuming where an interruption left it
(``fsnet_mmdet.tools.pipeline``, bench_accuracy's runner); a finished run is
read back from its ``result.json``. One benchmark at a time on the 2 cores.

    python benchmarks/bench_detectors.py --detectors retinanet --seeds 0 \\
        --variants dense fs thin
    python benchmarks/bench_detectors.py --report-only   # table and plot
    python benchmarks/bench_detectors.py --speed   # s / iter side by side

Writes ``<work-dir>/<detector>/<variant>/seed<N>/result.json`` and, from all
finished runs, ``docs/accuracy/detectors/{results.md,results.json,
map_vs_params.png}``; each result names its ``detector``, ``variant``,
``seed`` and ``mAP``.
"""
from __future__ import annotations

import argparse
import dataclasses
import glob
import json
import os
import statistics
import sys
import time
from typing import Callable, Dict, List, Optional, Sequence

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from fsnet_mmdet.tools.pipeline import (map_of, quantize_and_test,  # noqa: E402
                                        run_tool, schedule_text,
                                        seconds_per_iteration,
                                        train_resumable)
from fsnet_mmdet.utils.io import write_json_atomic  # noqa: E402

DEMO = os.path.join(ROOT, 'configs', 'demo')


def _round8(x: float) -> int:
    return max(8, int(round(x / 8)) * 8)


def _resnet_fpn_width(w: float, head: str) -> str:
    """A ResNet-18 x 1/4 + FPN detector at width ``w`` (1: the recipe's)."""
    b, c = max(4, int(round(16 * w))), _round8(64 * w)
    text = (f'model = dict(backbone=dict(base_channels={b}), '
            f'neck=dict(in_channels={[b, 2 * b, 4 * b, 8 * b]}, '
            f'out_channels={c}),\n')
    if head == 'retina':
        return text + (f'    bbox_head=dict(in_channels={c}, '
                       f'feat_channels={c}, norm_cfg=dict(num_groups='
                       f'{c // 4})))\n')
    return text + (f'    rpn_head=dict(in_channels={c}, feat_channels={c}),\n'
                   f'    roi_head=dict(bbox_roi_extractor=dict(out_channels='
                   f'{c}), bbox_head=dict(in_channels={c}, fc_out_channels='
                   f'{_round8(256 * w)})))\n')


def _rtmdet_width(w: float) -> str:
    """RTMDet-tiny demo at ``w`` times the recipe's width (0.25 of RTMDet-L)."""
    width = round(0.25 * w, 4)
    c = [int(x * width) for x in (256, 512, 1024)]
    return (f'model = dict(backbone=dict(widen_factor={width}), '
            f'neck=dict(in_channels={c}, out_channels={c[0]}), '
            f'bbox_head=dict(in_channels={c[0]}, feat_channels={c[0]}))\n')


@dataclasses.dataclass(frozen=True)
class Detector:
    """One detector recipe: its dense config and how to thin it."""

    name: str
    config: str
    width: Callable[[float], str]
    fs_convert: dict = dataclasses.field(default_factory=dict)
    #: module-name patterns of its classification predictors
    cls_predictors: tuple = ()


DETECTORS = {
    'retinanet': Detector('retinanet', 'retinanet_r18_fpn_demo.py',
                          lambda w: _resnet_fpn_width(w, 'retina'),
                          cls_predictors=('bbox_head.retina_cls',)),
    'rtmdet': Detector('rtmdet', 'rtmdet_tiny_demo.py', _rtmdet_width,
                       cls_predictors=('bbox_head.rtm_cls.*',)),
    'faster-rcnn': Detector('faster-rcnn', 'faster-rcnn_r18_fpn_demo.py',
                            lambda w: _resnet_fpn_width(w, 'rcnn'),
                            dict(linear=dict()),
                            cls_predictors=('rpn_head.rpn_cls',
                                            'roi_head.bbox_head.fc_cls')),
}
_NO_GN = dict(bbox_head=dict(norm_cfg=None))
_GRID = dict(fs_convert=dict(predictor_order='grid'))
#: variant -> (label, FS?, model overrides: ``fs_convert`` options join the
#: detector's). ``thin``'s widths are set per detector.
VARIANTS: Dict[str, tuple] = {
    'dense': ('dense', False, {}),
    'fs': ('FS (fs_convert)', True, {}),
    'thin': ("dense thinned to FS's parameters", False, {}),
    # Diagnosis (docs/detectors.md): one change each.
    'fs-grid': ('FS, predictors in grid order', True, _GRID),
    'dense-nogn': ('dense, no GN in the head', False, _NO_GN),
    'fs-nogn': ('FS, no GN in the head', True, _NO_GN),
    'fs-nogn-grid': ('FS, no GN in the head, grid order', True,
                     dict(_NO_GN, **_GRID)),
    # Where FS costs accuracy: one part of the model left dense.
    'fs-dense-backbone': ('FS, backbone left dense', True,
                          dict(fs_convert=dict(exclude=['backbone.*']))),
    'fs-dense-neck': ('FS, neck left dense', True,
                      dict(fs_convert=dict(exclude=['neck.*']))),
    'fs-dense-head': ('FS, head left dense', True,
                      dict(fs_convert=dict(exclude=['bbox_head.*']))),
    'thin-dense-head': ("dense thinned to the parameters of FS with the head "
                        "left dense", False, {}),
    # The classification predictors left dense (the detector's own list).
    'fs-dense-cls': ('FS, classification predictors left dense', True, {}),
    # The head's convs at half the summary compression (K3 halved, Eq. 1).
    'fs-head-half': ('FS, head at half compression', True,
                     dict(fs_convert=dict(rules=[dict(pattern='bbox_head.*',
                                                      k3_scale=0.5)]))),
    # RTMDet only: its DynamicSoftLabelAssigner's cost weighs the IoU cost
    # 10 instead of mmdet's 3, so that a classifier with low scores no longer
    # makes high-IoU priors the dearer ones (docs/detectors.md).
    'fs-iou10': ('FS, assigner IoU weight 10', True,
                 dict(train_cfg=dict(assigner=dict(iou_weight=10.0)))),
}
MAIN = ('dense', 'fs', 'thin')
#: FSConv's path in the training runs: the filters, the path every run in
#: docs/accuracy/detectors was trained with before ``compute='auto'`` became
#: FSConv's default, so that a seed names the same run before and after
#: (the paths agree up to float rounding, which a 1500-iteration run
#: amplifies). ``--speed`` times the default, ``'auto'``.
RUN_COMPUTE = 'filters'
#: thin variants -> the FS variant whose stored parameters they match.
THIN_OF = {'thin': 'fs', 'thin-dense-head': 'fs-dense-head'}


def config_text(detector: Detector, variant: str, seed: int, iters: int,
                data_root: str, width: float = 1.0, wq: bool = False,
                compute: str = RUN_COMPUTE) -> str:
    """The generated config of one run; ``compute``: its FSConvs' path."""
    label, fs, model = VARIANTS[variant]
    model = dict(model)
    lines = [f'# Generated by benchmarks/bench_detectors.py: {detector.name}, '
             f'{label}, seed {seed}.',
             f'_base_ = {os.path.join(DEMO, detector.config)!r}']
    options = dict(detector.fs_convert, **model.pop('fs_convert', {}))
    if variant == 'fs-dense-cls':
        options['exclude'] = list(detector.cls_predictors)
    if fs:
        options['conv'] = dict(options.get('conv', {}), compute=compute)
        if wq:
            options['conv'] = dict(options['conv'], wq=True)
            if 'linear' in options:
                options['linear'] = dict(options['linear'], wq=True)
        model['fs_convert'] = options
    if variant in THIN_OF:  # its own ``model = dict(...)``: nothing else
        lines.append(detector.width(width).rstrip())
    elif model:  # one assignment: a second ``model =`` would replace it
        lines.append(f'model = {model!r}')
    warmup = min(30, iters // 2)  # the demo's warm-up, then cosine
    return '\n'.join(lines) + '\n' + schedule_text(seed, iters, warmup, 0.01, 3e-5,
                                                   data_root)


def _write(path: str, text: str) -> str:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, 'w') as f:
        f.write(text)
    return path


def counts(config: str):
    """``count_params`` of the model a config builds."""
    from fsnet_mmdet import count_params
    from fsnet_mmdet.tools.count_params import build_model_from_config
    return count_params(build_model_from_config(config))


def stored_params(config: str) -> int:
    return counts(config).stored


def thin_width(detector: Detector, work: str, data_root: str,
               variant: str = 'thin') -> float:
    """Width of the thin dense model whose parameters are closest to those
    of the FS variant ``THIN_OF[variant]`` (bisection on the width; channels
    round to multiples of 8); cached."""
    suffix = '' if variant == 'thin' else '_' + THIN_OF[variant]
    cache = os.path.join(work, detector.name, f'thin_width{suffix}.json')
    if os.path.exists(cache):
        return json.load(open(cache))['width']
    probe = os.path.join(work, detector.name, 'probe.py')
    target = stored_params(_write(probe, config_text(
        detector, THIN_OF[variant], 0, 10, data_root)))

    def params(w: float) -> int:
        return stored_params(_write(probe, config_text(
            detector, 'thin', 0, 10, data_root, width=w)))

    low, high = 0.05, 1.0
    for _ in range(8):
        mid = (low + high) / 2
        low, high = (mid, high) if params(mid) < target else (low, mid)
    width = min((low, high), key=lambda w: abs(params(w) - target))
    write_json_atomic(cache, dict(width=width, target=target,
                                  params=params(width)))
    return width


def run_one(detector: Detector, variant: str, seed: int, iters: int,
            work: str, data_root: str) -> dict:
    """Train and test one run (FS: also its WQ checkpoint); resumable."""
    run_dir = os.path.join(work, detector.name, variant, f'seed{seed}')
    result_path = os.path.join(run_dir, 'result.json')
    if os.path.exists(result_path):
        return json.load(open(result_path))
    start = time.time()
    width = (thin_width(detector, work, data_root, variant)
             if variant in THIN_OF else 1.0)
    os.makedirs(run_dir, exist_ok=True)
    log = os.path.join(run_dir, 'log.txt')
    what = f'bench_detectors {detector.name} {variant} seed {seed}'
    config = _write(os.path.join(run_dir, 'config.py'), config_text(
        detector, variant, seed, iters, data_root, width))
    if VARIANTS[variant][1] and not counts(config).summary:
        raise SystemExit(f'{what}: {config} builds no FS layer')
    train_dir = os.path.join(run_dir, 'train')
    checkpoint = train_resumable(config, train_dir, log=log, what=what)
    test_dir = os.path.join(run_dir, 'test')
    run_tool('tools/test.py', config, checkpoint, '--work-dir', test_dir,
             log=log, what=what)
    result = dict(detector=detector.name, variant=variant, seed=seed,
                  iters=iters, width=width, params=stored_params(config),
                  mAP=map_of(test_dir),
                  s_iter=seconds_per_iteration(train_dir))
    if VARIANTS[variant][1]:
        wq_config = _write(os.path.join(run_dir, 'config_wq.py'), config_text(
            detector, variant, seed, iters, data_root, wq=True))
        mAP_wq, bytes_wq = quantize_and_test(config, wq_config, checkpoint,
                                             run_dir, log=log, what=what)
        result.update(mAP_wq=mAP_wq, bytes_wq=bytes_wq)
    result['bytes'] = os.path.getsize(checkpoint)
    result['wall_s'] = time.time() - start
    os.remove(checkpoint)  # keep results, not weights
    write_json_atomic(result_path, result)
    return result


# ------------------------------------------------------------------- speed
def speed(detectors: List[str], data_root: str, reps: int, docs: str,
          variants: Sequence[str] = ('fs',), filters: bool = False) -> str:
    """FS / dense seconds per training iteration, side by side in one process.

    For each detector: its dense model and one model per FS variant of
    ``variants`` (e.g. ``fs``, ``fs-dense-head``) built from the runs'
    configs (seed 0), their recipe's optimizer wrapper (bfloat16 autocast,
    AdamW), one training batch of the demo data through the recipe's
    pipeline (8 images), and ``model.train_step(batch, optim_wrapper)``
    (what the Runner's loop runs per iteration, without the data loading)
    timed interleaved ``reps`` times after 2 warm-up steps each; the medians
    and each variant's ratio to dense. The FS models run FSConv's default
    ``compute='auto'``; with ``filters``, each also with
    ``compute='filters'`` in the same interleaved run. Writes
    ``<docs>/speed.md``.

    Raises:
        SystemExit: a variant of ``variants`` that is not an FS variant.
    """
    import tempfile

    import torch
    from mmengine.config import Config
    from mmengine.optim import build_optim_wrapper
    from mmengine.registry import init_default_scope
    from mmengine.runner import Runner
    from mmdet.registry import MODELS

    from benchmarks.timing import interleaved, med, spread

    wrong = [v for v in variants if not VARIANTS[v][1]]
    if wrong:
        raise SystemExit(f'--speed --variants: {wrong} are not FS variants; '
                         f'allowed: {[v for v in VARIANTS if VARIANTS[v][1]]}')
    lines = ['| detector | model | dense s / iter | model s / iter | '
             'model / dense | spread dense, model |', '|---|---|---|---|---|---|']
    skipped = []
    models = [('dense', 'auto')] + [
        (v, c) for v in variants
        for c in (('auto', 'filters') if filters else ('auto',))]
    with tempfile.TemporaryDirectory() as tmp:
        for det in detectors:
            steps, cfg = {}, None
            for variant, compute in models:
                cfg = Config.fromfile(_write(
                    os.path.join(tmp, f'{det}-{variant}-{compute}.py'),
                    config_text(DETECTORS[det], variant, 0, 1500, data_root,
                                compute=compute)))
                init_default_scope('mmdet')
                torch.manual_seed(0)
                try:
                    model = MODELS.build(cfg.model)
                except ValueError as e:  # e.g. no ``bbox_head`` to leave dense
                    if f'{det} {variant}: {e}' not in skipped:
                        skipped.append(f'{det} {variant}: {e}')
                        print(f'--speed: skipped {skipped[-1]}', flush=True)
                    continue
                model.init_weights()
                model.train()
                wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
                steps[variant, compute] = (model, wrapper)
            batch = next(iter(Runner.build_dataloader(
                dict(cfg.train_dataloader, num_workers=0,
                     persistent_workers=False), seed=0)))
            times = interleaved(
                {v: (lambda m=m, w=w: m.train_step(batch, w))
                 for v, (m, w) in steps.items()}, reps, warmup=2)
            dense = times.pop(('dense', 'auto'))
            d = med(dense)
            for (variant, compute), t in times.items():
                label = VARIANTS[variant][0] + (
                    f", compute='{compute}'" if compute != 'auto' else '')
                lines.append(f'| {det} | {label} | {d:.3f} | {med(t):.3f} | '
                             f'{med(t) / d:.3f} | {spread(dense):.0%}, '
                             f'{spread(t):.0%} |')
                print(lines[-1], flush=True)
    command = ' '.join(['python benchmarks/bench_detectors.py --speed',
                        '--detectors', *detectors, '--variants', *variants,
                        '--reps', str(reps)] + (['--filters'] if filters else []))
    text = ('# Training iteration time, FS against dense, side by side\n\n'
            f'`{command}`: {torch.get_num_threads()} torch threads; median of '
            f'{reps} interleaved `train_step` calls on one demo batch (8 '
            "images), after 2 warm-up steps each; FS models with FSConv's "
            "default compute='auto' unless the row says otherwise; "
            'spread = (max - min) / median.\n\n' + '\n'.join(lines) + '\n'
            + ''.join(f'\nNot timed: {s}\n' for s in skipped))
    os.makedirs(docs, exist_ok=True)
    with open(os.path.join(docs, 'speed.md'), 'w') as f:
        f.write(text)
    return text


# ------------------------------------------------------------------ report
def _mean_std(values: List[float]) -> tuple:
    return (statistics.mean(values),
            statistics.stdev(values) if len(values) > 1 else 0.0)


def summarize(results: List[dict]) -> List[dict]:
    """One row per (detector, variant), and per FS-WQ: mean and std over seeds."""
    rows = []
    keys = sorted({(r['detector'], r['iters'], r['variant']) for r in results},
                  key=lambda k: (k[0], -k[1], list(VARIANTS).index(k[2])))
    for det, iters, variant in keys:
        runs = [r for r in results
                if (r['detector'], r['iters'], r['variant']) == (det, iters, variant)]
        times = [r['s_iter'] for r in runs if r.get('s_iter')]
        base = dict(name=f'{det}-{variant}-iters{iters}', detector=det,
                    variant=variant, label=VARIANTS[variant][0],
                    seeds=[r['seed'] for r in runs], iters=runs[0]['iters'],
                    params=runs[0]['params'],
                    s_iter=statistics.median(times) if times else None)
        m, s = _mean_std([r['mAP'] for r in runs])
        rows.append(dict(base, mAP=m, std=s, maps=[r['mAP'] for r in runs]))
        if 'mAP_wq' in runs[0]:
            m, s = _mean_std([r['mAP_wq'] for r in runs])
            rows.append(dict(base, name=f'{det}-{variant}-wq-iters{iters}',
                             variant=variant + '-wq',
                             label=base['label'] + ', WQ', mAP=m, std=s,
                             params=runs[0]['params'],
                             maps=[r['mAP_wq'] for r in runs]))
    return rows


def table(rows: List[dict]) -> str:
    lines = ['| detector | model | # params | iterations | s / iter | '
             'mAP@0.5 (mean +- std) | seeds (per seed) |',
             '|---|---|---|---|---|---|---|']
    for r in rows:
        speed = f'{r["s_iter"]:.2f}' if r['s_iter'] else '-'
        per = ', '.join(f'{m:.3f}' for m in r['maps'])
        lines.append(f'| {r["detector"]} | {r["label"]} | {r["params"]:,} | '
                     f'{r["iters"]} | {speed} | {r["mAP"]:.3f} +- '
                     f'{r["std"]:.3f} | {len(r["maps"])} ({per}) |')
    return '\n'.join(lines)


def plot(rows: List[dict], out: str) -> None:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    detectors = sorted({r['detector'] for r in rows})
    fig, axes = plt.subplots(1, len(detectors), squeeze=False,
                             figsize=(4.5 * len(detectors), 4))
    for ax, det in zip(axes[0], detectors):
        for r in (r for r in rows if r['detector'] == det):
            ax.errorbar([r['params']], [100 * r['mAP']], yerr=[100 * r['std']],
                        marker='o', capsize=3)
            ax.annotate(f'{r["variant"]}, {r["iters"]} it ({len(r["maps"])})',
                        (r['params'], 100 * r['mAP']), fontsize=7,
                        xytext=(4, 3), textcoords='offset points')
        ax.set_xscale('log')
        ax.set_title(det, fontsize=9)
        ax.set_xlabel('stored parameters (WQ: same count, 8-bit)')
        ax.set_ylabel('mAP@0.5 (%), demo test split (seeds)')
        ax.grid(alpha=0.3, which='both')
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def report(work_root: str, docs: str) -> str:
    """Table, json and plot of every finished run under ``work_root``
    (all schedules: ``iters<N>/<detector>/<variant>/seed<S>``)."""
    results = [json.load(open(p)) for p in sorted(glob.glob(os.path.join(
        work_root, 'iters*', '*', '*', 'seed*', 'result.json')))]
    if not results:
        raise SystemExit(f'no finished run under {work_root}')
    rows = summarize(results)
    os.makedirs(docs, exist_ok=True)
    text = table(rows)
    with open(os.path.join(docs, 'results.md'), 'w') as f:
        f.write('# FS in RetinaNet, RTMDet-tiny and Faster R-CNN (demo data)\n\n'
                'Made by `python benchmarks/bench_detectors.py --report-only` '
                'from the runs listed in results.json.\n\n' + text + '\n')
    write_json_atomic(os.path.join(docs, 'results.json'),
                      dict(runs=results, rows=rows))
    plot(rows, os.path.join(docs, 'map_vs_params.png'))
    return text


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--detectors', nargs='+', choices=sorted(DETECTORS),
                        default=sorted(DETECTORS))
    parser.add_argument('--variants', nargs='+', choices=list(VARIANTS),
                        help='runs: default dense fs thin; --speed: the FS '
                        'variants timed against dense, default fs')
    parser.add_argument('--seeds', nargs='+', type=int, default=[0])
    parser.add_argument('--iters', type=int, default=1500)
    parser.add_argument('--work-dir', default=os.path.join(
        ROOT, 'work_dirs', 'bench_detectors'))
    parser.add_argument('--data-root', default=os.path.join(
        ROOT, 'data', 'demo', 'VOCdevkit'))
    parser.add_argument('--docs', default=os.path.join(
        ROOT, 'docs', 'accuracy', 'detectors'))
    parser.add_argument('--report-only', action='store_true')
    parser.add_argument('--speed', action='store_true',
                        help='time a training iteration of dense and FS '
                        '(--variants) side by side (no training runs): '
                        '<docs>/speed.md')
    parser.add_argument('--reps', type=int, default=20,
                        help='--speed: interleaved iterations per model')
    parser.add_argument('--filters', action='store_true',
                        help="--speed: also time each FS model with "
                        "compute='filters'")
    args = parser.parse_args(argv)
    if args.speed:
        print(speed(args.detectors, os.path.abspath(args.data_root) + '/',
                    args.reps, args.docs, args.variants or ('fs',),
                    args.filters))
        return
    args.variants = args.variants or list(MAIN)
    work = os.path.join(args.work_dir, f'iters{args.iters}')
    if not args.report_only:
        from fsnet_mmdet.datasets.synthetic_voc import ensure_dataset
        ensure_dataset(os.path.abspath(args.data_root))
        runs = [(d, v, s) for s in args.seeds for d in args.detectors
                for v in args.variants]
        start = time.time()
        for i, (det, variant, seed) in enumerate(runs):
            r = run_one(DETECTORS[det], variant, seed, args.iters, work,
                        os.path.abspath(args.data_root))
            left = (time.time() - start) / (i + 1) * (len(runs) - i - 1)
            print(f'[{i + 1}/{len(runs)}] {det} {variant} seed {seed}: mAP '
                  f'{r["mAP"]:.3f}' + (f' (WQ {r["mAP_wq"]:.3f})'
                                       if 'mAP_wq' in r else '')
                  + f'; ETA {left / 60:.0f} min', flush=True)
    print(report(args.work_dir, args.docs))


if __name__ == '__main__':
    main()
