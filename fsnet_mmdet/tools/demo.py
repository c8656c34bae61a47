"""``make demo``: the whole method on a CPU, end to end, through the real tools.

generate data -> tools/train.py (FS detector from scratch, bfloat16
training: ``configs/demo/fsnet_ssd300_demo_bf16.py``) -> tools/test.py (VOC
mAP) -> tools/quantize.py (WQ) -> tools/test.py (mAP again) -> one table
(with the benchmark's dense models at the same iterations), a loss curve,
detections drawn on test images and a parameters-vs-mAP chart next to the
paper's Table 4, all under the work dir, and the wall time it took.
"""
import argparse
import glob
import json
import os
import shutil
import time
from typing import List, Optional

from ..utils.io import write_json_atomic
from .pipeline import (ROOT, last_checkpoint, map_of, run_tool,
                       training_records)

#: What the demo trains: the demo model with bfloat16 training, 1500 iterations.
CONFIG = 'configs/demo/fsnet_ssd300_demo_bf16.py'
WQ_CONFIG = 'configs/demo/fsnet_ssd300_demo_wq.py'
#: The dense models the demo's table compares with, trained by the accuracy
#: benchmark on the same data for the demo's iterations (its committed
#: results): (results file, benchmark point, label).
BENCHMARK_DENSE = [
    ('docs/accuracy/iters{iters}/results.json', 'dense-w0.25',
     'dense SSD300-BN, width 0.25, float32'),
    ('docs/accuracy/iters{iters}-bf16/results.json', 'dense-as-fs-k3x1-bf16',
     'dense, thinned to the FS parameters, bf16 as the demo'),
]
def _data_options(data_root: str) -> List[str]:
    root = data_root.rstrip('/') + '/'
    return [f'train_dataloader.dataset.dataset.data_root={root}',
            f'val_dataloader.dataset.data_root={root}',
            f'test_dataloader.dataset.data_root={root}']


def _tool(*args: str) -> None:
    run_tool(*args, what='demo')


def benchmark_dense_rows(iters: int, root: str = ROOT) -> List[dict]:
    """The dense rows of :data:`BENCHMARK_DENSE` at ``iters`` iterations.

    Returns:
        One row per model the benchmark ran (mean over its seeds; ``variant``
        says where the row comes from), in :data:`BENCHMARK_DENSE`'s order;
        those without a results file are left out.
    """
    found = []
    for path, name, label in BENCHMARK_DENSE:
        path = os.path.join(root, path.format(iters=iters))
        if not os.path.exists(path):
            continue
        with open(path) as f:
            rows = {r['name']: r for r in json.load(f)['rows']}
        if name in rows:
            r = rows[name]
            found.append(dict(variant=f'{label} (benchmark, {r["seeds"]} '
                              f'seed(s), not trained here)', params=r['params'],
                              effective=r['params'], bytes=r['bytes'],
                              mAP=r['mAP']))
    return found


def _loss_curve(train_dir: str, out: str) -> None:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    records = [r for r in training_records(train_dir) if 'iter' in r]
    steps, losses = [r['iter'] for r in records], [r['loss'] for r in records]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(steps, losses)
    ax.set_xlabel('iteration')
    ax.set_ylabel('training loss (cls + bbox)')
    ax.set_title('FSNet SSD300 (demo scale), trained from scratch on CPU')
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def _chart(rows: List[dict], out: str) -> None:
    """Parameters against mAP: the paper's Table 4 (VOC) and this demo's rows
    on two panels, never one axis (different data: not comparable in mAP)."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    from ..models import PAPER_TABLE4
    fig, (paper, demo) = plt.subplots(1, 2, figsize=(10, 4))
    panels = (
        (paper, [(f'{name} (paper)', p, m, 'tab:gray')
                 for name, (p, m) in PAPER_TABLE4.items()],
         'Paper Table 4: SSD300, VOC2007 test (paper\'s mAP)'),
        (demo, [(r['variant'], r['effective'], r['mAP'] * 100,
                 'tab:blue' if r['variant'].startswith('dense') else 'tab:red')
                for r in rows], 'This demo: generated data (ours)'))
    for ax, points, title in panels:
        # Labels stacked in the order of mAP, so close points do not overlap.
        for i, (name, params, m, color) in enumerate(
                sorted(points, key=lambda t: t[2])):
            ax.scatter(params / 1e6, m, color=color)
            ax.annotate(name.split(' (')[0], (params / 1e6, m), fontsize=7,
                        color=color, xytext=(6, -8 + 12 * (i % 2)),
                        textcoords='offset points')
        ax.set_xscale('log')
        ax.set_xlabel('(effective) parameters, millions')
        ax.set_ylabel('mAP@0.5 (%)')
        ax.set_title(title, fontsize=9)
        ax.grid(alpha=0.3, which='both')
        ax.margins(x=0.25, y=0.15)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def _detections(checkpoint: str, data_root: str, out_dir: str,
                count: int = 4) -> None:
    """Draw the WQ model's detections on the first test images (mmdet's visualizer)."""
    import mmcv
    from mmdet.apis import inference_detector, init_detector
    from mmdet.registry import VISUALIZERS

    model = init_detector(os.path.join(ROOT, WQ_CONFIG), checkpoint,
                          device='cpu')
    visualizer = VISUALIZERS.build(model.cfg.visualizer)
    visualizer.dataset_meta = model.dataset_meta
    voc = os.path.join(data_root, 'VOC2007')
    with open(os.path.join(voc, 'ImageSets', 'Main', 'test.txt')) as f:
        names = f.read().split()[:count]
    for i, name in enumerate(names):
        path = os.path.join(voc, 'JPEGImages', f'{name}.jpg')
        image = mmcv.imread(path, channel_order='rgb')
        visualizer.add_datasample(
            name, image, data_sample=inference_detector(model, path),
            draw_gt=False, pred_score_thr=0.3,
            out_file=os.path.join(out_dir, f'detections_{i}.jpg'))


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--work-dir', default='work_dirs/demo')
    parser.add_argument('--data-root', default='data/demo/VOCdevkit')
    parser.add_argument('--num-trainval', type=int, default=None,
                        help='generated training images (default: the spec)')
    parser.add_argument('--num-test', type=int, default=None)
    parser.add_argument('--iters', type=int, default=None,
                        help='training iterations (default: the config)')
    parser.add_argument('--force', action='store_true',
                        help='delete the results of an earlier run first')
    args = parser.parse_args(argv)

    import torch
    from mmengine.config import Config

    from ..datasets.synthetic_voc import SyntheticVOCSpec, ensure_dataset
    from ..layers.accounting import count_params
    from ..conversion.checkpoints import save_weights
    from .count_params import build_model_from_config

    start = time.time()
    work_dir = os.path.abspath(args.work_dir)
    summary_path = os.path.join(work_dir, 'summary.json')
    if os.path.exists(summary_path) and not args.force:
        raise SystemExit(f'demo: {work_dir} already holds a finished demo '
                         f'({summary_path}); rerun with --force to replace it, '
                         f'or give another --work-dir')
    if args.force and os.path.exists(work_dir):
        shutil.rmtree(work_dir)
    os.makedirs(work_dir, exist_ok=True)

    spec_args = {k: v for k, v in (('num_trainval', args.num_trainval),
                                   ('num_test', args.num_test)) if v}
    data_root = os.path.abspath(args.data_root)
    print(f'[1/6] data: {data_root}', flush=True)
    ensure_dataset(data_root, SyntheticVOCSpec(**spec_args))

    options = _data_options(data_root)
    train_dir = os.path.join(work_dir, 'train')
    resume = glob.glob(os.path.join(train_dir, 'iter_*.pth'))
    if resume:
        print(f'[2/6] train: resuming the interrupted run in {train_dir}')
    else:
        print(f'[2/6] train: {CONFIG} -> {train_dir}')
    train_opts = list(options)
    if args.iters:
        train_opts += [f'train_cfg.max_iters={args.iters}',
                       f'default_hooks.checkpoint.interval={args.iters}']
    _tool('tools/train.py', CONFIG, '--work-dir', train_dir,
          *(['--resume'] if resume else []), '--cfg-options', *train_opts)
    checkpoint = last_checkpoint(train_dir)

    print('[3/6] test the FS model (VOC 11-point mAP@0.5)', flush=True)
    fs_dir = os.path.join(work_dir, 'test_fs')
    _tool('tools/test.py', CONFIG, checkpoint, '--work-dir', fs_dir,
          '--cfg-options', *options)
    print('[4/6] quantize (WQ)', flush=True)
    wq_path = os.path.join(work_dir, 'fsnet_wq.pth')
    _tool('tools/quantize.py', CONFIG, checkpoint, wq_path)
    print('[5/6] test the WQ model', flush=True)
    wq_dir = os.path.join(work_dir, 'test_wq')
    _tool('tools/test.py', WQ_CONFIG, wq_path, '--work-dir', wq_dir,
          '--cfg-options', *options)

    print('[6/6] table and pictures', flush=True)
    model = build_model_from_config(os.path.join(ROOT, CONFIG))
    report = count_params(model)
    state = torch.load(checkpoint, map_location='cpu', weights_only=False)
    fp32_path = os.path.join(work_dir, 'fsnet_fp32.pth')
    # weights and the run's dataset_meta (the demo's class names for
    # init_detector / DetInferencer), without the optimizer state
    fp32_bytes = save_weights(fp32_path, state['state_dict'], state.get('meta'))
    rows = [
        dict(variant='FSNet', params=report.stored, effective=report.stored,
             bytes=fp32_bytes, mAP=map_of(fs_dir)),
        dict(variant='FSNet-WQ', params=report.stored,
             effective=report.effective_wq, bytes=os.path.getsize(wq_path),
             mAP=map_of(wq_dir)),
    ]
    iters = args.iters or Config.fromfile(
        os.path.join(ROOT, CONFIG)).train_cfg.max_iters
    dense_rows = benchmark_dense_rows(iters)
    pictures = os.path.join(work_dir, 'pictures')
    os.makedirs(pictures, exist_ok=True)
    _loss_curve(train_dir, os.path.join(pictures, 'loss.png'))
    _chart(dense_rows + rows, os.path.join(pictures, 'params_vs_map.png'))
    _detections(wq_path, data_root, pictures)

    lines = ['| variant | parameters | effective parameters | checkpoint bytes '
             '| mAP@0.5 (demo test split) |', '|---|---|---|---|---|']
    if not dense_rows:
        lines.append(f'| dense equivalent (not trained; no benchmark results '
                     f'at {iters} iterations) | {report.dense:,} | '
                     f'{report.dense:,} | {4 * report.dense:,} (fp32) | - |')
    lines += [f'| {r["variant"]} | {r["params"]:,} | {r["effective"]:,.0f} | '
              f'{r["bytes"]:,} | {r["mAP"]:.3f} |' for r in dense_rows + rows]
    table = '\n'.join(lines)
    elapsed = time.time() - start
    with open(os.path.join(work_dir, 'summary.md'), 'w') as f:
        f.write(table + f'\n\n{iters} training iterations (`{CONFIG}`), '
                f'wall time {elapsed / 60:.1f} min\n')
    write_json_atomic(summary_path, dict(rows=dense_rows + rows,
                                         dense=report.dense, wall_s=elapsed,
                                         iters=iters, config=CONFIG))
    print('\n' + table)
    print(f'\ndemo finished in {elapsed / 60:.1f} min; results, pictures and '
          f'checkpoints in {work_dir}')
