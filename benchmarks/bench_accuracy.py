"""Accuracy of FSNet against dense SSD300 at several widths, measured.

Every point trains through the real tools on the demo's generated data with the
demo's schedule (``configs/demo/fsnet_ssd300_demo.py``: AdamW, batch 8, width
0.25), changing only the conv layers, the width and the seed:

* dense SSD300-BN at the demo width, at half of it, and at the widths whose
  parameter count is closest to each FS model's (found by bisection);
* FS SSD300 at the demo width with the paper's K3 rule scaled by
  ``k3_scale`` 0.5, 1 and 2 (about 2x less, as much, and 2x more compression
  in the 3x3 layers; Eq. 1), twice: with the head's predictors in grid order
  (the layer's default) and with ``FSSSDHead(pred_interleave=True)`` (the
  configs' default; README "Accuracy, measured");
* the WQ version of every FS model (``tools/quantize.py``, then
  ``tools/test.py`` on the 8-bit checkpoint).

Per (point, seed): ``tools/train.py`` -> ``tools/test.py`` (VOC 11-point
mAP@0.5 on the test split) [-> ``tools/quantize.py`` -> ``tools/test.py``].
Finished runs are skipped (each writes ``result.json``), an interrupted
training resumes. Writes, under ``--docs``: ``results.md`` (the table, in the
form of the paper's Table 4), ``results.json`` (every run) and
``params_vs_map.png`` (the curves, mean +- std over seeds).

    python benchmarks/bench_accuracy.py                        # the full set
    python benchmarks/bench_accuracy.py --iters 300 --seeds 0 1 2
    python benchmarks/bench_accuracy.py --variants fs-k3x1 fs-k3x1-lr2x   # experiments
    python benchmarks/bench_accuracy.py --quick                # tiny, for the tests
"""
import argparse
import dataclasses
import json
import os
import statistics
import sys
import time
from typing import List, Optional

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from fsnet_mmdet.tools.pipeline import (last_checkpoint, map_of,  # noqa: E402
                                        run_tool, seconds_per_iteration,
                                        training_records, write_json_atomic)

DEMO_CONFIG = os.path.join(ROOT, 'configs', 'demo', 'fsnet_ssd300_demo.py')
DEMO_WIDTH = 0.25
#: Paper Table 4 (parameters, VOC2007 test mAP %): shown on its own panel.
PAPER_TABLE4 = {
    'SSD300-BN': (26.32e6, 77.31), 'FSNet-1': (1.67e6, 67.60),
    'FSNet-1-WQ': (0.45e6, 67.63), 'FSNet-2': (2.59e6, 70.14),
    'FSNet-2-WQ': (0.68e6, 70.00),
}


@dataclasses.dataclass(frozen=True)
class Variant:
    """One point of the benchmark: a model and its training changes.

    Attributes:
        name: identifier (run directory, ``--variants``).
        label: text for the table.
        widen: width multiplier of every layer.
        fs: FSConv options, or None for dense ``nn.Conv2d``.
        matches: for dense points: the FS variant whose parameter count sets
            ``widen`` (resolved by :func:`matched_width`).
        overrides: config text appended to the generated config (an
            experiment's training change); empty for the main curves.
        curve: the plot curve the point belongs to.
        dense_predictors: keep the head's class/box predictors ``nn.Conv2d``.
        pred_interleave: ``FSSSDHead(pred_interleave=True)``.
        base: the config the generated one inherits (the demo's, or the
            DFSNet demo's with its search hook and logits' learning rate).
    """

    name: str
    label: str
    widen: float = DEMO_WIDTH
    fs: Optional[dict] = None
    matches: Optional[str] = None
    overrides: str = ''
    curve: str = ''
    dense_predictors: bool = False
    pred_interleave: bool = False
    base: str = DEMO_CONFIG


def _fs(k3_scale: float, **options) -> dict:
    return dict(type='FSConv', preset='paper', k3_scale=k3_scale, **options)


MAIN = [
    Variant('dense-w0.25', 'dense SSD300-BN, width 0.25', curve='dense'),
    Variant('dense-w0.125', 'dense, width 0.125', widen=0.125, curve='dense'),
    Variant('fs-k3x0.5', 'FS, K3 x 0.5', fs=_fs(0.5), curve='fs'),
    Variant('fs-k3x1', 'FS, K3 x 1 (paper Table 1 rule)', fs=_fs(1), curve='fs'),
    Variant('fs-k3x2', 'FS, K3 x 2', fs=_fs(2), curve='fs'),
    Variant('fs-k3x0.5-interleave', 'FS, K3 x 0.5, pred_interleave',
            fs=_fs(0.5), pred_interleave=True, curve='fs-il'),
    Variant('fs-k3x1-interleave', 'FS, K3 x 1, pred_interleave', fs=_fs(1),
            pred_interleave=True, curve='fs-il'),
    Variant('fs-k3x2-interleave', 'FS, K3 x 2, pred_interleave', fs=_fs(2),
            pred_interleave=True, curve='fs-il'),
    Variant('dense-as-fs-k3x0.5', 'dense, params of FS K3 x 0.5',
            matches='fs-k3x0.5', curve='dense'),
    Variant('dense-as-fs-k3x1', 'dense, params of FS K3 x 1',
            matches='fs-k3x1', curve='dense'),
    Variant('dense-as-fs-k3x2', 'dense, params of FS K3 x 2',
            matches='fs-k3x2', curve='dense'),
]
#: Experiments (README "Why FS trails"): one change each against fs-k3x1.
_LR2X = "optim_wrapper = dict(optimizer=dict(lr=6e-3))  # demo: 3e-3\n"
_LR_HALF = "optim_wrapper = dict(optimizer=dict(lr=1.5e-3))  # demo: 3e-3\n"
EXPERIMENTS = [
    Variant('fs-k3x1-selfwrap', 'FS K3 x 1, self_wrap=True (old stride rule)',
            fs=_fs(1, self_wrap=True)),
    Variant('fs-k3x2-selfwrap', 'FS K3 x 2, self_wrap=True (old stride rule)',
            fs=_fs(2, self_wrap=True)),
    Variant('fs-k3x1-sum', 'FS K3 x 1, grad_reduction=sum',
            fs=_fs(1, grad_reduction='sum')),
    Variant('fs-k3x1-lr2x', 'FS K3 x 1, lr x 2', fs=_fs(1),
            overrides=_LR2X),
    Variant('fs-k3x1-densepred', 'FS K3 x 1, dense predictors', fs=_fs(1),
            dense_predictors=True),
    Variant('dense-w0.25-lr2x', 'dense width 0.25, lr x 2',
            overrides=_LR2X),
    # Against fs-k3x{1,2}-interleave (the configs' recipe):
    *(Variant(f'fs-k3x{k}-interleave-1d',
              f'FS K3 x {k}, pred_interleave, 1D summary (later paper)',
              fs=_fs(k, layout='1d'), pred_interleave=True) for k in (1, 2)),
    Variant('fs-k3x1-interleave-lr0.5x', 'FS K3 x 1, pred_interleave, lr x 0.5',
            fs=_fs(1), pred_interleave=True, overrides=_LR_HALF),
]
#: DFSNet (README "DFSNet"): the FS pred_interleave points with learned
#: filter locations, searched for half the schedule, then discretized; the
#: logits start uniform (dfs_prior 0) or favouring the grid (2: the configs').
DFS_DEMO_CONFIG = os.path.join(ROOT, 'configs', 'demo', 'dfsnet_ssd300_demo.py')
#: Prior 2: a filter leaves the grid only where its gradient keeps pushing
#: it for much of the search.
DFS = [
    Variant(f'dfs{tag}-k3x{k}-interleave',
            f'DFSNet, {start}, K3 x {k}, pred_interleave',
            fs=_fs(k, dfs_radius=1, dfs_prior=prior), pred_interleave=True,
            curve=curve, base=DFS_DEMO_CONFIG)
    for tag, start, prior, curve in (('', 'uniform start', 0.0, 'dfs'),
                                     ('-prior2', 'grid prior 2', 2.0,
                                      'dfs-prior'))
    for k in (1, 2)
]
VARIANTS = {v.name: v for v in MAIN + EXPERIMENTS + DFS}


# ------------------------------------------------------------------ configs
def config_text(variant: Variant, seed: int, iters: int, data_root: str,
                wq: bool = False) -> str:
    """The generated config of one run: the demo config plus the variant."""
    from fsnet_mmdet.models.fs_ssd_vgg import ssd300_widths

    widths = list(ssd300_widths(variant.widen))
    conv = dict(variant.fs, wq=True) if (variant.fs and wq) else (
        variant.fs or dict(type='Conv2d'))
    pred = dict(type='Conv2d') if variant.dense_predictors else conv
    # _delete_: the demo config's FSConv options must not leak into these.
    conv, pred = dict(conv, _delete_=True), dict(pred, _delete_=True)
    root = data_root.rstrip('/') + '/'
    log_interval = max(1, min(25, iters // 4))
    warmup = min(30, iters // 2)  # the demo's 30-iteration warm-up, then cosine
    text = f"""# Generated by benchmarks/bench_accuracy.py: {variant.label}, seed {seed}.
_base_ = {variant.base!r}
conv = {conv!r}
model = dict(
    backbone=dict(widen_factor={variant.widen!r}, conv_cfg=conv),
    neck=dict(in_channels={widths[:2]!r}, out_channels={widths!r},
              conv_cfg=conv),
    bbox_head=dict(in_channels={widths!r}, pred_conv_cfg={pred!r},
                   pred_interleave={variant.pred_interleave!r}))
randomness = dict(seed={seed})
train_cfg = dict(max_iters={iters}, val_interval={iters + 1})
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0,
         end={warmup}),
    dict(type='CosineAnnealingLR', by_epoch=False, begin={warmup},
         end={iters}, eta_min=3e-5),
]
default_hooks = dict(logger=dict(interval={log_interval}),
                     checkpoint=dict(interval={iters}))
train_dataloader = dict(dataset=dict(dataset=dict(data_root={root!r})))
val_dataloader = dict(dataset=dict(data_root={root!r}))
test_dataloader = val_dataloader
"""
    return text + variant.overrides


def write_config(path: str, text: str) -> str:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, 'w') as f:
        f.write(text)
    return path


def count(variant: Variant, work: str, data_root: str,
          state_dict: Optional[dict] = None):
    """ParamCounts of a variant's model (built from its generated config),
    with ``state_dict`` loaded (a DFSNet model counts as discretized)."""
    from fsnet_mmdet.fsconv import count_params
    from fsnet_mmdet.tools.count_params import build_model_from_config

    path = write_config(os.path.join(work, 'count_config.py'),
                        config_text(variant, 0, 10, data_root))
    model = build_model_from_config(path)
    if state_dict is not None:
        model.load_state_dict(state_dict)
    return count_params(model)


def matched_width(target: int, work: str, data_root: str,
                  low: float = 0.01, high: float = DEMO_WIDTH) -> float:
    """Width of the dense model whose parameter count is closest to ``target``.

    Bisection on ``widen_factor`` (the count grows with the width), then the
    closer of the two bracketing widths, rounded to 4 decimals.
    """
    def params(w: float) -> int:
        return count(Variant('probe', 'probe', widen=w), work, data_root).stored

    for _ in range(14):
        mid = (low + high) / 2
        if params(mid) < target:
            low = mid
        else:
            high = mid
    low, high = round(low, 4), round(high, 4)
    return min((low, high), key=lambda w: abs(params(w) - target))


def resolve(variants: List[Variant], work: str, data_root: str) -> List[Variant]:
    """Set the width of every dense point that matches an FS point's count."""
    out = []
    cache_path = os.path.join(work, 'matched_widths.json')
    cache = json.load(open(cache_path)) if os.path.exists(cache_path) else {}
    for v in variants:
        if v.matches:
            if v.matches not in cache:
                target = count(VARIANTS[v.matches], work, data_root).stored
                cache[v.matches] = matched_width(target, work, data_root)
                with open(cache_path, 'w') as f:
                    json.dump(cache, f)
            v = dataclasses.replace(v, widen=cache[v.matches])
        out.append(v)
    return out


# --------------------------------------------------------------------- runs
def final_loss(train_dir: str, key: str = 'loss') -> Optional[float]:
    """Mean of a logged training loss over the last quarter of the iterations.

    A second, less noisy measure of fit than a 250-iteration mAP, which sits
    where detections first clear the score threshold.

    Args:
        train_dir: the run's training work dir.
        key: ``'loss'`` (the total), ``'loss_cls'`` or ``'loss_bbox'``.
    """
    losses = [r[key] for r in training_records(train_dir) if key in r]
    tail = losses[-max(1, len(losses) // 4):]
    return statistics.mean(tail) if tail else None


LOSSES = ('loss', 'loss_cls', 'loss_bbox')


def run_one(variant: Variant, seed: int, iters: int, work: str,
            data_root: str) -> dict:
    """Train, test (and quantize + test) one point; returns its result."""
    from fsnet_mmdet.quantization import save_atomic
    import torch

    run_dir = os.path.join(work, variant.name, f'seed{seed}')
    result_path = os.path.join(run_dir, 'result.json')
    train_dir = os.path.join(run_dir, 'train')
    if os.path.exists(result_path):
        result = json.load(open(result_path))
        for key in LOSSES:  # results written before these were recorded
            result.setdefault(key, final_loss(train_dir, key))
        return result
    start = time.time()
    log = os.path.join(run_dir, 'log.txt')
    config = write_config(os.path.join(run_dir, 'config.py'),
                          config_text(variant, seed, iters, data_root))
    resume = ['--resume'] if os.path.exists(
        os.path.join(train_dir, 'last_checkpoint')) else []
    run_tool('tools/train.py', config, '--work-dir', train_dir, *resume,
             log=log, what=f'bench_accuracy {variant.name} seed {seed}')
    checkpoint = last_checkpoint(train_dir)
    test_dir = os.path.join(run_dir, 'test')
    run_tool('tools/test.py', config, checkpoint, '--work-dir', test_dir,
             log=log, what=f'bench_accuracy {variant.name} seed {seed}')
    state = torch.load(checkpoint, map_location='cpu', weights_only=False)
    counts = count(variant, run_dir, data_root, state['state_dict'])
    fp32 = os.path.join(run_dir, 'weights_fp32.pth')
    result = dict(variant=variant.name, seed=seed, iters=iters,
                  widen=variant.widen, params=counts.stored,
                  mAP=map_of(test_dir), s_iter=seconds_per_iteration(train_dir),
                  **{key: final_loss(train_dir, key) for key in LOSSES},
                  bytes=save_atomic(state['state_dict'], fp32))
    if variant.fs:
        wq_config = write_config(os.path.join(run_dir, 'config_wq.py'),
                                 config_text(variant, seed, iters, data_root,
                                             wq=True))
        wq_path = os.path.join(run_dir, 'weights_wq.pth')
        run_tool('tools/quantize.py', config, checkpoint, wq_path, log=log,
                 what=f'bench_accuracy {variant.name} seed {seed}')
        wq_dir = os.path.join(run_dir, 'test_wq')
        run_tool('tools/test.py', wq_config, wq_path, '--work-dir', wq_dir,
                 log=log, what=f'bench_accuracy {variant.name} seed {seed}')
        result.update(effective_wq=counts.effective_wq, mAP_wq=map_of(wq_dir),
                      bytes_wq=os.path.getsize(wq_path))
    for path in (checkpoint, fp32):  # keep results, not 1-7 MB weights
        os.remove(path)
    result['wall_s'] = time.time() - start
    write_json_atomic(result_path, result)
    return result


# ------------------------------------------------------------------ report
def _mean_std(values: List[float]) -> tuple:
    return (statistics.mean(values),
            statistics.stdev(values) if len(values) > 1 else 0.0)


def summarize(variants: List[Variant], results: List[dict]) -> List[dict]:
    """One row per variant (and per WQ variant): mean and std over seeds."""
    rows = []
    for v in variants:
        runs = [r for r in results if r['variant'] == v.name]
        if not runs:
            continue
        times = [r['s_iter'] for r in runs if r.get('s_iter')]
        base = dict(name=v.name, label=v.label, widen=v.widen, curve=v.curve,
                    seeds=len(runs), params=runs[0]['params'],
                    s_iter=statistics.median(times) if times else None)
        for key in LOSSES:
            losses = [r[key] for r in runs if r.get(key) is not None]
            base[key] = statistics.mean(losses) if losses else None
        m, s = _mean_std([r['mAP'] for r in runs])
        rows.append(dict(base, effective=runs[0]['params'],
                         bytes=runs[0]['bytes'], mAP=m, std=s,
                         maps=[r['mAP'] for r in runs]))
        if 'mAP_wq' in runs[0]:
            m, s = _mean_std([r['mAP_wq'] for r in runs])
            rows.append(dict(base, name=v.name + '-wq', label=v.label + ', WQ',
                             curve=v.curve + '-wq' if v.curve else '',
                             effective=runs[0]['effective_wq'],
                             bytes=runs[0]['bytes_wq'], mAP=m, std=s,
                             maps=[r['mAP_wq'] for r in runs]))
    return rows


def table(rows: List[dict]) -> str:
    widest = next((r for r in rows if r['name'] == 'dense-w0.25'), None)
    lines = ['| model | width | # params | effective params | checkpoint bytes '
             '| s / iter | final train loss (cls + bbox) | mAP@0.5 (mean +- std) | seeds '
             '| retention vs dense w0.25 |',
             '|---|---|---|---|---|---|---|---|---|---|']
    def order(r: dict) -> tuple:  # curves in turn, each followed by its WQ
        return (r['curve'] == '', r['curve'].removesuffix('-wq'),
                r['curve'].endswith('-wq'), -r['effective'])

    for r in sorted(rows, key=order):
        keep = (f'{100 * r["mAP"] / widest["mAP"]:.0f}%' if widest and
                widest['mAP'] > 0 else '-')
        speed = f'{r["s_iter"]:.2f}' if r['s_iter'] else '-'
        loss = (f'{r["loss"]:.2f} ({r["loss_cls"]:.2f} + {r["loss_bbox"]:.2f})'
                if r.get('loss_bbox') is not None
                and not r['name'].endswith('-wq') else '-')
        lines.append(
            f'| {r["label"]} | {r["widen"]:g} | {r["params"]:,} | '
            f'{r["effective"]:,.0f} | {r["bytes"]:,} | {speed} | {loss} | '
            f'{r["mAP"]:.3f} +- {r["std"]:.3f} | {r["seeds"]} | {keep} |')
    return '\n'.join(lines)


def plot(rows: List[dict], out: str, title: str) -> None:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    fig, (ax, paper) = plt.subplots(
        1, 2, figsize=(11, 4.5), gridspec_kw=dict(width_ratios=[2, 1]))
    styles = {'dense': ('tab:blue', 'o', 'dense SSD300-BN, widths'),
              'fs': ('tab:red', 's', 'FS SSD300 (width 0.25), K3 x 0.5/1/2, '
                     'grid order'),
              'fs-wq': ('tab:orange', 'v', 'FS grid order, WQ (effective params)'),
              'fs-il': ('tab:green', 'D', 'FS, pred_interleave (the configs\' '
                        'default)'),
              'fs-il-wq': ('tab:olive', '^', 'FS pred_interleave, WQ (effective '
                           'params)'),
              'dfs': ('tab:purple', 'P', 'DFSNet, uniform start'),
              'dfs-wq': ('tab:pink', '*', 'DFSNet, WQ (effective params)'),
              'dfs-prior': ('tab:brown', 'X', 'DFSNet, grid prior 2 (the configs\')'),
              'dfs-prior-wq': ('tab:gray', 'p', 'DFSNet grid prior 2, WQ')}
    for curve, (color, marker, label) in styles.items():
        pts = sorted((r for r in rows if r['curve'] == curve),
                     key=lambda r: r['effective'])
        if pts:
            ax.errorbar([p['effective'] for p in pts],
                        [100 * p['mAP'] for p in pts],
                        yerr=[100 * p['std'] for p in pts], color=color,
                        marker=marker, capsize=3, label=label)
    for r in rows:
        if not r['curve']:
            ax.errorbar([r['effective']], [100 * r['mAP']],
                        yerr=[100 * r['std']], marker='x', color='gray',
                        capsize=3)
            ax.annotate(r['label'], (r['effective'], 100 * r['mAP']),
                        fontsize=6, xytext=(4, 3), textcoords='offset points')
    ax.set_xscale('log')
    ax.set_xlabel('(effective) parameters')
    ax.set_ylabel('mAP@0.5 (%), demo test split')
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3, which='both')
    ax.legend(fontsize=7)
    for name, (params, m) in PAPER_TABLE4.items():
        paper.scatter(params, m, color='tab:gray', marker='s')
        paper.annotate(name, (params, m), fontsize=7, xytext=(4, 2),
                       textcoords='offset points')
    paper.set_xscale('log')
    paper.set_xlabel('parameters')
    paper.set_ylabel('mAP (%), VOC2007 test')
    paper.set_title("The paper's Table 4 (VOC07+12, full width):\n"
                    'not our measurement, other data', fontsize=9)
    paper.grid(alpha=0.3, which='both')
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


# --------------------------------------------------------------------- main
def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--variants', nargs='+', default=None,
                        choices=sorted(VARIANTS), metavar='NAME',
                        help=f'points to run (default: the main set); '
                        f'allowed: {sorted(VARIANTS)}')
    parser.add_argument('--seeds', nargs='+', type=int, default=[0, 1, 2])
    parser.add_argument('--iters', type=int, default=None,
                        help='training iterations (default: the demo '
                        "config's, 750)")
    parser.add_argument('--work-dir', default=None,
                        help='runs (default: work_dirs/bench_accuracy/iters<N>)')
    parser.add_argument('--docs', default=None,
                        help='where the table, json and plot go '
                        '(default: docs/accuracy/iters<N>)')
    parser.add_argument('--data-root', default='data/demo/VOCdevkit')
    parser.add_argument('--report-only', action='store_true',
                        help='train nothing: write the table of the runs '
                        'finished so far')
    parser.add_argument('--quick', action='store_true',
                        help='tiny scale (8 images, 2 iterations, 1 seed, '
                        '3 points) in a temporary folder: for the tests')
    args = parser.parse_args(argv)

    from mmengine.config import Config

    from fsnet_mmdet.datasets.synthetic_voc import (SyntheticVOCSpec,
                                                    ensure_dataset)

    start = time.time()
    if args.iters is not None and args.iters < 2:
        parser.error(f'--iters must be >= 2 (warm-up, then decay), got '
                     f'{args.iters}')
    iters = args.iters or Config.fromfile(DEMO_CONFIG).train_cfg.max_iters
    spec = SyntheticVOCSpec()
    names = args.variants or [v.name for v in MAIN]
    if args.quick:
        iters, spec = args.iters or 2, SyntheticVOCSpec(num_trainval=8,
                                                         num_test=4)
        args.seeds = args.seeds if '--seeds' in (argv or sys.argv) else [0]
        names = args.variants or ['dense-w0.25', 'fs-k3x1', 'dense-as-fs-k3x1']
    if len(set(args.seeds)) != len(args.seeds):
        parser.error(f'--seeds must differ, got {args.seeds}')
    work = os.path.abspath(args.work_dir or os.path.join(
        ROOT, 'work_dirs', 'bench_accuracy' + ('_quick' if args.quick else ''),
        f'iters{iters}'))
    docs = os.path.abspath(args.docs or (os.path.join(work, 'docs') if args.quick
                                         else os.path.join(ROOT, 'docs', 'accuracy',
                                                           f'iters{iters}')))
    data_root = os.path.abspath(args.data_root if not args.quick else
                                os.path.join(work, 'data'))
    os.makedirs(work, exist_ok=True)
    ensure_dataset(data_root, spec)

    needed = [VARIANTS[n] for n in names]
    needed += [VARIANTS[v.matches] for v in needed
               if v.matches and v.matches not in names]
    variants = resolve([v for v in needed if v.name in names], work, data_root)
    # Seed-major: every point gets its first seed before any gets a second.
    jobs = [(v, s) for s in args.seeds for v in variants]
    print(f'bench_accuracy: {len(variants)} points x {len(args.seeds)} seeds, '
          f'{iters} iterations each; runs in {work}', flush=True)
    results, done_s, done_iters = [], 0.0, 0
    for i, (v, seed) in enumerate(jobs, 1):
        finished = os.path.exists(os.path.join(work, v.name, f'seed{seed}',
                                               'result.json'))
        per_iter = done_s / done_iters if done_iters else None
        left = len(jobs) - i + 1
        eta = (f', ETA {per_iter * iters * left / 60:.0f} min'
               if per_iter else '')
        if args.report_only and not finished:
            continue
        print(f'[{i}/{len(jobs)}] {v.name} (width {v.widen:g}) seed {seed}'
              f'{" (done, skipped)" if finished else ""}{eta}', flush=True)
        run_start = time.time()
        result = run_one(v, seed, iters, work, data_root)
        results.append(result)
        if not finished:
            done_s += time.time() - run_start
            done_iters += iters
            print(f'    mAP {result["mAP"]:.3f}'
                  + (f', WQ {result["mAP_wq"]:.3f}' if 'mAP_wq' in result
                     else '')
                  + f', {result["wall_s"] / 60:.1f} min', flush=True)

    rows = summarize(variants, results)
    os.makedirs(docs, exist_ok=True)
    # The command that makes (or resumes) these runs; --report-only only
    # rewrites this table from the finished ones.
    command = 'python benchmarks/bench_accuracy.py ' + ' '.join(
        a for a in (argv if argv is not None else sys.argv[1:])
        if a != '--report-only')
    elapsed = time.time() - start
    runs_s = sum(r.get('wall_s', 0.0) for r in results)
    text = (f'{table(rows)}\n\nCommand: `{command.strip()}`; {iters} training '
            f'iterations of 8 images per run, seeds {args.seeds}; the '
            f'{len(results)} runs took {runs_s / 60:.0f} min of wall time in '
            f'all (train, test, quantize, test; results.json has each run\'s). '
            + ('Table written from the finished runs (--report-only).\n'
               if args.report_only else
               f'This invocation: {elapsed / 60:.1f} min (finished runs are '
               f'skipped).\n'))
    with open(os.path.join(docs, 'results.md'), 'w') as f:
        f.write(text)
    with open(os.path.join(docs, 'results.json'), 'w') as f:
        json.dump(dict(command=command.strip(), iters=iters, seeds=args.seeds,
                       rows=rows, runs=results), f, indent=1)
    plot(rows, os.path.join(docs, 'params_vs_map.png'),
         f'Measured on the demo data: {iters} iterations, batch 8, AdamW; '
         f'mean +- std over {len(args.seeds)} seeds')
    print('\n' + text)
    print(f'bench_accuracy: wall time {elapsed / 60:.1f} min; table, json and '
          f'plot in {docs}')


if __name__ == '__main__':
    main()
