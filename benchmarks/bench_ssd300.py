"""Dense SSD300-BN against FSNet-1 and FSNet-2 SSD300, measured side by side.

Builds the three models in one process and times, interleaved, a training
iteration (forward + loss + backward + SGD step) and the eval-mode forward
(batch 1 and the training batch); measures the peak memory of a training
iteration of each (a fresh process per model on CPU, peak RSS; on CUDA,
max_memory_allocated) and the checkpoint bytes (dense fp32, FS fp32, FS WQ
compressed); prints every ratio FS / dense.

    python benchmarks/bench_ssd300.py [--device cpu|cuda] [--batch N] [--reps N]
    python benchmarks/bench_ssd300.py --widen 0.25   # the demo's width
    python benchmarks/bench_ssd300.py --widen 0.25 --dfs   # + DFSNet searching
    python benchmarks/bench_ssd300.py --models dense fsnet1 --compute auto
        # + FSNet-1 with every FSConv computing per compute='auto'

At ``--widen W`` below 1 every layer is W times as wide and the FS model is the
demo's (``preset='paper'``: the ``fsnet1`` / ``fsnet2`` presets list the
full-width filter counts only). ``--dfs`` adds the FS model with its filter
locations being searched (DFSNet, ``dfs_radius=1``: the training cost of the
relaxation; after ``discretize()`` the model is the FS one).
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
from typing import Dict, Tuple

import torch

sys.path.insert(0, os.path.dirname(__file__))
from timing import interleaved, med, spread  # noqa: E402

import fsnet_mmdet  # noqa: E402,F401
from fsnet_mmdet.conversion import fs_layers  # noqa: E402
from fsnet_mmdet.layers.accounting import count_params  # noqa: E402
from fsnet_mmdet.layers.wq import compress_state_dict  # noqa: E402
from fsnet_mmdet.utils.io import save_atomic  # noqa: E402
from fsnet_mmdet.tools.count_params import build_model_from_config  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODELS = {
    'dense': 'configs/ssd300_bn_voc.py',
    'fsnet1': 'configs/fsnet_ssd300_voc.py',
    'fsnet2': 'configs/fsnet2_ssd300_voc.py',
}
LABELS = {'dense': 'dense SSD300-BN', 'fsnet1': 'FSNet-1', 'fsnet2': 'FSNet-2',
          'fs': 'FS (demo)', 'dfs': 'DFS searching'}


def label(name: str) -> str:
    """``'fsnet1+auto'``: FSNet-1 with ``compute='auto'``."""
    base, _, compute = name.partition('+')
    return LABELS[base] + (f' {compute}' if compute else '')


def model_configs(widen: float, dfs: bool = False) -> Dict[str, Tuple[str, dict]]:
    """Model name -> (config, cfg options) at width ``widen``; with ``dfs``
    also the DFSNet model (searching) of the FS one."""
    if widen == 1:
        models = {name: (config, {}) for name, config in MODELS.items()}
        if dfs:
            models['dfs'] = ('configs/dfsnet_ssd300_voc.py', {})
        return models
    from fsnet_mmdet.models.fs_ssd_vgg import ssd300_widths

    widths = list(ssd300_widths(widen))
    shape = {'model.backbone.widen_factor': widen,
             'model.neck.in_channels': widths[:2],
             'model.neck.out_channels': widths,
             'model.bbox_head.in_channels': widths}
    def fs(**options):
        conv = dict(type='FSConv', preset='paper', **options)
        return dict(shape, **{'model.backbone.conv_cfg': conv,
                              'model.neck.conv_cfg': conv,
                              'model.bbox_head.pred_conv_cfg': conv})

    models = {'dense': (MODELS['dense'], shape), 'fs': (MODELS['fsnet1'], fs())}
    if dfs:
        models['dfs'] = (MODELS['fsnet1'], fs(dfs_radius=1))
    return models


def build(name: str, device: str, widen: float = 1.0):
    from mmengine.logging import MMLogger

    MMLogger.get_current_instance().setLevel('WARNING')  # no init report
    from fsnet_mmdet import FSConv

    torch.manual_seed(0)
    base, _, compute = name.partition('+')
    config, options = model_configs(widen, dfs=base == 'dfs')[base]
    model = build_model_from_config(os.path.join(ROOT, config), options)
    model.init_weights()
    for module in model.modules():  # 'fsnet1+auto': FSConv(compute='auto')
        if compute and isinstance(module, FSConv):
            module.compute = compute
    return model.to(device)


def synthetic_batch(batch: int, device: str, seed: int = 0):
    """Normalized 300x300 images and 3 random boxes each, as DetDataSamples."""
    from mmengine.structures import InstanceData
    from mmdet.structures import DetDataSample

    g = torch.Generator().manual_seed(seed)
    inputs = torch.randn(batch, 3, 300, 300, generator=g).to(device)
    samples = []
    for _ in range(batch):
        xy = torch.rand(3, 2, generator=g) * 200
        wh = 30 + torch.rand(3, 2, generator=g) * 70
        sample = DetDataSample(metainfo=dict(
            img_shape=(300, 300), batch_input_shape=(300, 300),
            pad_shape=(300, 300), scale_factor=(1.0, 1.0), ori_shape=(300, 300)))
        sample.gt_instances = InstanceData(
            bboxes=torch.cat([xy, xy + wh], 1).to(device),
            labels=torch.randint(0, 20, (3,), generator=g).to(device))
        samples.append(sample)
    return inputs, samples


def train_step(model, optimizer, inputs, samples):
    def run():
        model.train()
        losses = model.loss(inputs, samples)
        loss, _ = model.parse_losses(losses)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return run


def infer(model, inputs):
    def run():
        model.eval()
        with torch.no_grad():
            model(inputs, mode='tensor')
    return run


def checkpoint_bytes(models) -> dict:
    sizes = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, model in models.items():
            state = {k: v.cpu() for k, v in model.state_dict().items()}
            sizes[f'{name} fp32'] = save_atomic(state, os.path.join(tmp, name))
            layers = fs_layers(model)
            if layers:
                ckpt = compress_state_dict(
                    state, [f'{n}.summary' for n in layers], {})
                sizes[f'{name} WQ'] = save_atomic(ckpt, os.path.join(tmp, name + 'wq'))
    return sizes


def peak_rss_kib() -> int:
    """This process's peak resident memory (VmHWM; unlike ru_maxrss, it is
    not inherited from the parent across fork + exec)."""
    with open('/proc/self/status') as f:
        return next(int(line.split()[1]) for line in f
                    if line.startswith('VmHWM:'))


def memory_probe(name: str, batch: int, widen: float) -> None:
    """Print this process's peak RSS (KiB) after two training iterations."""
    before = peak_rss_kib()
    model = build(name, 'cpu', widen)
    inputs, samples = synthetic_batch(batch, 'cpu')
    step = train_step(model, torch.optim.SGD(model.parameters(), lr=1e-3,
                                             momentum=0.9), inputs, samples)
    step(), step()
    print(json.dumps(dict(peak_kib=peak_rss_kib(), imports_kib=before)))


def peak_memory(name: str, batch: int, device: str, widen: float) -> float:
    """Peak memory of a training iteration in MiB."""
    if device.startswith('cuda'):
        model = build(name, device, widen)
        inputs, samples = synthetic_batch(batch, device)
        step = train_step(model, torch.optim.SGD(model.parameters(), lr=1e-3,
                                                 momentum=0.9), inputs, samples)
        step()
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        step()
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() / 2**20
        del model, step
        torch.cuda.empty_cache()
        return peak
    out = subprocess.run([sys.executable, __file__, '--memory-probe', name,
                          '--batch', str(batch), '--widen', str(widen)],
                         capture_output=True,
                         text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])['peak_kib'] / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--batch', type=int, default=None,
                        help='training batch (default 8 on CPU, 32 on CUDA)')
    parser.add_argument('--reps', type=int, default=5)
    parser.add_argument('--widen', type=float, default=1.0,
                        help='width multiplier of every layer (default 1; the '
                        'demo: 0.25)')
    parser.add_argument('--dfs', action='store_true',
                        help='also time the DFSNet model while it searches')
    parser.add_argument('--models', nargs='+', default=None,
                        help='a subset of the models (default: all)')
    parser.add_argument('--compute', choices=('summary', 'auto'),
                        help="also time each FS model with every FSConv's "
                        "compute set to this (the others: 'filters')")
    parser.add_argument('--memory-probe', help=argparse.SUPPRESS)
    args = parser.parse_args()
    if not 0 < args.widen <= 1:
        parser.error(f'--widen must be in (0, 1], got {args.widen}')
    batch = args.batch or (32 if args.device.startswith('cuda') else 8)
    if args.memory_probe:
        return memory_probe(args.memory_probe, batch, args.widen)

    device_name = (torch.cuda.get_device_name() if args.device.startswith('cuda')
                   else f'CPU, {torch.get_num_threads()} threads')
    print(f'device: {device_name}; torch {torch.__version__}; width '
          f'{args.widen:g}; training batch {batch}; {args.reps} interleaved '
          f'repetitions (median, spread)')
    names = [n for n in model_configs(args.widen, args.dfs)
             if args.models is None or n in args.models]
    if 'dense' not in names:
        parser.error('--models must include dense (every ratio is to it)')
    if args.compute:
        names += [f'{n}+{args.compute}' for n in names if n not in ('dense', 'dfs')]
    fs_names = [n for n in names if n != 'dense']
    models = {name: build(name, args.device, args.widen) for name in names}
    inputs, samples = synthetic_batch(batch, args.device)
    one = inputs[:1]
    rows = {}
    steps = {name: train_step(m, torch.optim.SGD(m.parameters(), lr=1e-3,
                                                 momentum=0.9), inputs, samples)
             for name, m in models.items()}
    rows['train iteration'] = interleaved(steps, args.reps, device=args.device)
    rows['inference batch 1'] = interleaved(
        {n: infer(m, one) for n, m in models.items()}, args.reps * 4,
        device=args.device)
    rows[f'inference batch {batch}'] = interleaved(
        {n: infer(m, inputs) for n, m in models.items()}, args.reps,
        device=args.device)

    print(f'\n{"measurement":<22} '
          + ' '.join(f'{label(n):>16}' for n in names) + ' '
          + ' '.join(f'{label(n) + "/dense":>14}' for n in fs_names))
    for what, times in rows.items():
        cells = [f'{med(times[n]) * 1e3:9.1f} ms ±{spread(times[n]):3.0%}'
                 for n in names]
        print(f'{what:<22} ' + ' '.join(f'{c:>16}' for c in cells) + ' '
              + ' '.join(f'{med(times[n]) / med(times["dense"]):>14.3f}'
                         for n in fs_names))
    del models, steps
    peaks = {n: peak_memory(n, batch, args.device, args.widen) for n in names}
    print(f'{"peak memory (train)":<22} '
          + ' '.join(f'{peaks[n]:>12.0f} MiB' for n in names) + ' '
          + ' '.join(f'{peaks[n] / peaks["dense"]:>14.3f}' for n in fs_names))

    # A searching DFSNet model's checkpoint is not the product: after
    # discretize() it is the FS model's plus a small int8 table.
    # compute= does not change a checkpoint.
    models = {n: build(n, 'cpu', args.widen) for n in names
              if n != 'dfs' and '+' not in n}
    sizes = checkpoint_bytes(models)
    reports = {n: count_params(m) for n, m in models.items()}
    print('\ncheckpoint (state dict)      bytes   params (effective)   '
          'bytes / (4 x params)   dense / this')
    for key, size in sizes.items():
        name = key.split()[0]
        params = (reports[name].effective_wq if key.endswith('WQ')
                  else reports[name].stored)
        print(f'{key:<20} {size:>14,} {params:>18,.0f} {size / (4 * params):>22.3f} '
              f'{sizes["dense fp32"] / size:>14.1f}')


if __name__ == '__main__':
    main()
