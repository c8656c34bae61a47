"""FSConv computed from its summary against its filters and a dense conv, per SSD300 layer.

For every full-width SSD300 conv shape (VGG16 conv1_1 .. conv5_3, fc6, fc7,
the first two extra layers' 1x1 and stride-2 3x3 convs), prints one table:
the multiply-adds of the dense conv (= FS through its filters) and of the
summary path (stage 1 multiply-adds + stage 2 additions,
``fsnet_mmdet.layers.summary_conv.summary_macs``), their ratio, the median
wall time of the dense ``nn.Conv2d``, FSConv ``compute='filters'`` and
``compute='summary'`` for the forward (eval mode, no gradient: the filters
path reuses its cached bank) and the forward + backward (train mode, the
input's gradient included), each FS path's speedup over the dense conv, and
the path ``compute='auto'`` takes in each (``choose_compute``).

    python benchmarks/bench_summary_conv.py [--batch 1] [--reps 10]
        [--device cpu] [--preset paper]
    python benchmarks/bench_summary_conv.py --quick   # two tiny shapes
"""
import argparse
import copy
import os
import sys
from typing import List, NamedTuple, Optional

import torch

sys.path.insert(0, os.path.dirname(__file__))
from timing import interleaved, med  # noqa: E402

from fsnet_mmdet import FSConv  # noqa: E402
from fsnet_mmdet.layers.geometry import K3_PRESETS  # noqa: E402
from fsnet_mmdet.layers.summary_conv import choose_compute  # noqa: E402


class Layer(NamedTuple):
    """One conv shape: name, C -> K, kernel, stride, padding, dilation, input HxW."""

    name: str
    cin: int
    cout: int
    kernel: int
    stride: int
    padding: int
    dilation: int
    size: int


#: SSD300's full-width conv shapes (300x300 input), one row per distinct shape.
SSD300_LAYERS = [
    Layer('conv1_1', 3, 64, 3, 1, 1, 1, 300),
    Layer('conv1_2', 64, 64, 3, 1, 1, 1, 300),
    Layer('conv2_1', 64, 128, 3, 1, 1, 1, 150),
    Layer('conv2_2', 128, 128, 3, 1, 1, 1, 150),
    Layer('conv3_1', 128, 256, 3, 1, 1, 1, 75),
    Layer('conv3_2/3', 256, 256, 3, 1, 1, 1, 75),
    Layer('conv4_1', 256, 512, 3, 1, 1, 1, 38),
    Layer('conv4_2/3', 512, 512, 3, 1, 1, 1, 38),
    Layer('conv5_x', 512, 512, 3, 1, 1, 1, 19),
    Layer('fc6', 512, 1024, 3, 1, 6, 6, 19),
    Layer('fc7', 1024, 1024, 1, 1, 0, 1, 19),
    Layer('extra1 1x1', 1024, 256, 1, 1, 0, 1, 19),
    Layer('extra1 3x3/2', 256, 512, 3, 2, 1, 1, 19),
    Layer('extra2 1x1', 512, 128, 1, 1, 0, 1, 10),
    Layer('extra2 3x3/2', 128, 256, 3, 2, 1, 1, 10),
]
#: ``--quick``: two tiny shapes, one that 'auto' computes from the summary.
QUICK_LAYERS = [
    Layer('quick 3x3', 256, 256, 3, 1, 1, 1, 6),
    Layer('quick 3x3/2', 16, 32, 3, 2, 1, 1, 8),
]


def layers(quick: bool) -> List[Layer]:
    return QUICK_LAYERS if quick else SSD300_LAYERS


def _forward(module, x):
    def run():
        with torch.no_grad():
            module(x)
    return run


def _train_step(module, x):
    def run():
        module(x).sum().backward()
    return run


def measure(layer: Layer, batch: int, reps: int, device: str, preset: str) -> dict:
    """One table row: counts, median times (s), and 'auto''s choice."""
    fs = FSConv(layer.cin, layer.cout, layer.kernel, layer.stride,
                layer.padding, layer.dilation, preset=preset, device=device)
    dense = fs.to_conv2d()
    paths = {'dense': dense}
    for compute in ('filters', 'summary'):
        paths[compute] = copy.deepcopy(fs)
        paths[compute].compute = compute
    g, hw = fs.geometry, (layer.size, layer.size)
    x = torch.randn(batch, layer.cin, *hw, device=device)
    with torch.no_grad():
        out_hw = tuple(dense(x[:1]).shape[2:])
    filters, summary = fs.path_macs(hw, out_hw)
    counts = dict(dense=filters.total, summary=summary.total)
    for module in paths.values():
        module.eval()
    fwd = interleaved({k: _forward(m, x) for k, m in paths.items()}, reps,
                      device=device)
    for module in paths.values():
        module.train()
    xg = x.clone().requires_grad_()
    step = interleaved({k: _train_step(m, xg) for k, m in paths.items()}, reps,
                       device=device)
    return dict(layer=layer, macs=counts,
                fwd={k: med(v) for k, v in fwd.items()},
                step={k: med(v) for k, v in step.items()},
                auto={mode: choose_compute(g, layer.stride, layer.dilation,
                                           tuple(x.shape), torch.device(device).type,
                                           training=mode == 'step')
                      for mode in ('fwd', 'step')})


HEADER = (f'{"layer":<13} {"C->K":>9} {"k/s/d":>6} {"HxW":>7} '
          f'{"MACs dense M":>12} {"summary M":>9} {"ratio":>5} | '
          f'{"fwd dense ms":>12} {"filters":>8} {"summary":>8} '
          f'{"x filt":>6} {"x summ":>6} | '
          f'{"f+b dense ms":>12} {"filters":>8} {"summary":>8} '
          f'{"x filt":>6} {"x summ":>6} | {"auto fwd":>8} {"auto f+b":>8}')


def format_row(row: dict) -> str:
    layer, macs, fwd, step = row['layer'], row['macs'], row['fwd'], row['step']
    return (f'{layer.name:<13} {f"{layer.cin}->{layer.cout}":>9} '
            f'{f"{layer.kernel}/{layer.stride}/{layer.dilation}":>6} '
            f'{f"{layer.size}x{layer.size}":>7} {macs["dense"] / 1e6:>12.1f} '
            f'{macs["summary"] / 1e6:>9.1f} '
            f'{macs["dense"] / macs["summary"]:>5.2f} | '
            f'{fwd["dense"] * 1e3:>12.3f} {fwd["filters"] * 1e3:>8.3f} '
            f'{fwd["summary"] * 1e3:>8.3f} '
            f'{fwd["dense"] / fwd["filters"]:>6.2f} '
            f'{fwd["dense"] / fwd["summary"]:>6.2f} | '
            f'{step["dense"] * 1e3:>12.3f} {step["filters"] * 1e3:>8.3f} '
            f'{step["summary"] * 1e3:>8.3f} '
            f'{step["dense"] / step["filters"]:>6.2f} '
            f'{step["dense"] / step["summary"]:>6.2f} | {row["auto"]["fwd"]:>8} '
            f'{row["auto"]["step"]:>8}')


def main(argv: Optional[List[str]] = None) -> List[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--batch', type=int, default=1)
    parser.add_argument('--reps', type=int, default=10,
                        help='interleaved repetitions per path (median)')
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--preset', default='paper', choices=sorted(K3_PRESETS),
                        help="FSConv's K3 preset")
    parser.add_argument('--quick', action='store_true',
                        help='two tiny shapes, 2 repetitions (a smoke test)')
    args = parser.parse_args(argv)
    reps = 2 if args.quick else args.reps
    torch.manual_seed(0)
    print(f'device {args.device}, batch {args.batch}, preset {args.preset}, '
          f'{reps} interleaved repetitions (median), torch threads '
          f'{torch.get_num_threads()}; MACs per image; "x": speedup over the '
          f'dense conv')
    print(HEADER + '\n' + '-' * len(HEADER))
    rows = []
    for layer in layers(args.quick):
        rows.append(measure(layer, args.batch, reps, args.device, args.preset))
        print(format_row(rows[-1]), flush=True)
    return rows


if __name__ == '__main__':
    main()
