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
  configs' default; docs/accuracy.md);
* the WQ version of every FS model (``tools/quantize.py``, then
  ``tools/test.py`` on the 8-bit checkpoint).

Per (point, seed): ``tools/train.py`` -> ``tools/test.py`` (VOC 11-point
mAP@0.5 on the test split) [-> ``tools/quantize.py`` -> ``tools/test.py``].
Finished runs are skipped (each writes ``result.json``), an interrupted
training resumes. Writes, under ``--docs``: ``results.md`` (the table, in the
form of the paper's Table 4), ``results.json`` (every run) and
``params_vs_map.png`` (the curves, mean +- std over seeds).

The comparison of issue 22 (``--compare``): FS and FS-WQ against the other
ways a user can shrink the same detector, on the same data and schedule:

* int8 weights of the dense width-0.25 model and of the thin dense model
  matched to FS K3 x 1's parameters: the trained run's weights ->
  ``tools/quantize_int8.py`` -> ``tools/test.py`` (no training of their own);
* binary stacked filters (``BSFConv`` for every conv) at three bank sizes,
  trained from scratch: ``tools/train.py`` -> ``tools/compress_bsf.py`` ->
  ``tools/test.py`` on the compressed checkpoint;
* KSE and LRF from the trained dense width-0.25 run of the same seed:
  ``tools/compress.py --target <FS K3 x 1's parameters>`` ->
  ``tools/train.py`` (``--finetune-iters``, 250 by default, at the schedule
  of the from-trained FS path, ``configs/demo/fsnet_ssd300_demo_from_dense.py``)
  -> ``tools/test.py``; LRF's fine-tuned model also in int8 (pruning and
  8-bit weights combine: the pruned model at about FS-WQ's bytes).

Every run also records its FLOPs (:func:`count_flops`, as mmdet's
``tools/analysis_tools/get_flops.py`` counts them). The comparison report goes
to ``docs/accuracy/compare``: ``results.md`` (one row per method and size:
parameters, checkpoint bytes, FLOPs, s / iteration, mAP mean +- std),
``results.json``, ``map_vs_bytes.png`` and ``map_vs_flops.png``.

The code is the package ``benchmarks.accuracy``: ``variants`` (the points),
``configs`` (their generated configs, parameter counts, FLOPs and matched
widths), ``runner`` (the runs, resumable) and ``report`` (the tables, the
plots, ``results.json``); this script is its command line.

    python benchmarks/bench_accuracy.py                        # the full set
    python benchmarks/bench_accuracy.py --iters 300 --seeds 0 1 2
    python benchmarks/bench_accuracy.py --variants fs-k3x1 fs-k3x1-lr2x   # experiments
    python benchmarks/bench_accuracy.py --compare              # issue 22's table
    python benchmarks/bench_accuracy.py --list                 # every variant
    python benchmarks/bench_accuracy.py --quick [--compare]    # tiny, for the tests
"""
import argparse
import os
import sys
import time
from typing import List, Optional

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)  # fsnet_mmdet and the benchmarks package

from benchmarks.accuracy.configs import resolve  # noqa: E402
from benchmarks.accuracy.report import summarize, write_report  # noqa: E402
from benchmarks.accuracy.runner import run_all  # noqa: E402
from benchmarks.accuracy.variants import (COMPARE, DEMO_CONFIG,  # noqa: E402
                                          FROM_DENSE_CONFIG, MAIN, QUICK,
                                          QUICK_COMPARE, VARIANTS, list_text)


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--variants', nargs='+', default=None,
                        choices=sorted(VARIANTS), metavar='NAME',
                        help=f'points to run (default: the main set); '
                        f'allowed: {sorted(VARIANTS)}')
    parser.add_argument('--compare', action='store_true',
                        help='issue 22\'s comparison: FS, FS-WQ, dense and '
                        'thin dense (fp32 and int8), BSF at three sizes, KSE '
                        'and LRF (and LRF in int8); its table and plots go to '
                        'docs/accuracy/compare')
    parser.add_argument('--list', action='store_true',
                        help='print every variant with a one-line '
                        'description and exit')
    parser.add_argument('--seeds', nargs='+', type=int, default=[0, 1, 2])
    parser.add_argument('--iters', type=int, default=None,
                        help='training iterations (default: the demo '
                        "config's, 750)")
    parser.add_argument('--finetune-iters', type=int, default=None,
                        help='KSE / LRF fine-tuning iterations after '
                        'compressing the trained dense model (default: the '
                        "from-trained FS path's, "
                        'configs/demo/fsnet_ssd300_demo_from_dense.py, 250)')
    parser.add_argument('--work-dir', default=None,
                        help='runs (default: work_dirs/bench_accuracy/iters<N>)')
    parser.add_argument('--docs', default=None,
                        help='where the table, json and plot go '
                        '(default: docs/accuracy/iters<N>; with --compare, '
                        'docs/accuracy/compare)')
    parser.add_argument('--data-root', default='data/demo/VOCdevkit')
    parser.add_argument('--report-only', action='store_true',
                        help='train nothing: write the table of the runs '
                        'finished so far')
    parser.add_argument('--quick', action='store_true',
                        help='tiny scale (8 images, 2 iterations, 1 seed, '
                        '3 points; with --compare 6) in a temporary folder: '
                        'for the tests')
    args = parser.parse_args(argv)
    if args.list:
        print(list_text())
        return
    if args.compare and args.variants:
        parser.error('--compare selects its own variants; give --compare or '
                     '--variants, not both')

    from mmengine.config import Config

    from fsnet_mmdet.datasets.synthetic_voc import (SyntheticVOCSpec,
                                                    ensure_dataset)

    start = time.time()
    if args.iters is not None and args.iters < 2:
        parser.error(f'--iters must be >= 2 (warm-up, then decay), got '
                     f'{args.iters}')
    if args.finetune_iters is not None and args.finetune_iters < 2:
        parser.error(f'--finetune-iters must be >= 2 (warm-up, then decay), '
                     f'got {args.finetune_iters}')
    demo_iters = Config.fromfile(DEMO_CONFIG).train_cfg.max_iters
    iters = args.iters or demo_iters
    finetune_iters = args.finetune_iters or Config.fromfile(
        FROM_DENSE_CONFIG).train_cfg.max_iters
    spec = SyntheticVOCSpec()
    names = args.variants or (COMPARE if args.compare else
                              [v.name for v in MAIN])
    if args.quick:
        iters, spec = args.iters or 2, SyntheticVOCSpec(num_trainval=8,
                                                         num_test=4)
        finetune_iters = args.finetune_iters or 2
        args.seeds = args.seeds if '--seeds' in (argv or sys.argv) else [0]
        names = args.variants or (QUICK_COMPARE if args.compare else QUICK)
    if len(set(args.seeds)) != len(args.seeds):
        parser.error(f'--seeds must differ, got {args.seeds}')
    work = os.path.abspath(args.work_dir or os.path.join(
        ROOT, 'work_dirs', 'bench_accuracy' + ('_quick' if args.quick else ''),
        f'iters{iters}'))
    compare_dir = 'compare' + ('' if iters == demo_iters else f'-iters{iters}')
    docs = os.path.abspath(args.docs or (
        os.path.join(work, 'docs-compare' if args.compare else 'docs')
        if args.quick else os.path.join(
            ROOT, 'docs', 'accuracy',
            compare_dir if args.compare else f'iters{iters}')))
    data_root = os.path.abspath(args.data_root if not args.quick else
                                os.path.join(work, 'data'))
    os.makedirs(work, exist_ok=True)
    ensure_dataset(data_root, spec)

    needed = [VARIANTS[n] for n in names]
    needed += [VARIANTS[v.matches] for v in needed
               if v.matches and v.matches not in names]
    variants = resolve([v for v in needed if v.name in names], work, data_root)
    # Points made from another point's trained model after the others.
    variants.sort(key=lambda v: v.source is not None)
    results = run_all(variants, args.seeds, iters, work, data_root,
                      finetune_iters, report_only=args.report_only)

    rows = summarize(variants, results)
    # The command that makes (or resumes) these runs; --report-only only
    # rewrites this table from the finished ones.
    command = 'python benchmarks/bench_accuracy.py ' + ' '.join(
        a for a in (argv if argv is not None else sys.argv[1:])
        if a != '--report-only')
    elapsed = time.time() - start
    text = write_report(docs, rows, results, command=command, iters=iters,
                        seeds=args.seeds, finetune_iters=finetune_iters,
                        compare=args.compare, report_only=args.report_only,
                        elapsed=elapsed)
    print('\n' + text)
    print(f'bench_accuracy: wall time {elapsed / 60:.1f} min; table, json and '
          f'plot{"s" if args.compare else ""} in {docs}')


if __name__ == '__main__':
    main()
