"""FSConv against nn.Conv2d on every distinct SSD300 layer shape, side by side.

For each conv of FSNet-1 SSD300 (300x300 input) with a distinct shape, times
forward + backward (training) and the eval-mode forward of the dense layer
and of the FSConv, interleaved, and prints medians and the FS / dense ratio.

    python benchmarks/bench_fsconv.py [--batch 8] [--reps 5] [--device cpu]
    python benchmarks/bench_fsconv.py --widen 0.25   # the demo's FS model

The last line gives the worst ratios, also over the layers whose output is
at least 5x5 (issue 12's per-layer target).
"""
import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(__file__))
from timing import interleaved, med, spread  # noqa: E402

import fsnet_mmdet  # noqa: E402,F401
from fsnet_mmdet import FSConv  # noqa: E402
from fsnet_mmdet.tools.count_params import build_model_from_config  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def ssd300_layer_shapes(config: str, options: dict = None):
    """(name, FSConv, input shape, output HxW) for every FSConv with a
    distinct setting."""
    model = build_model_from_config(os.path.join(ROOT, config), options).eval()
    found, seen = [], set()

    def hook(module, inputs, output):
        key = (module.in_channels, module.out_channels, module.kernel_size,
               module.stride, module.padding, module.dilation,
               tuple(inputs[0].shape[2:]))
        if key not in seen:
            seen.add(key)
            found.append((names[module], module, tuple(inputs[0].shape[1:]),
                          tuple(output.shape[2:])))

    names = {m: n for n, m in model.named_modules() if isinstance(m, FSConv)}
    handles = [m.register_forward_hook(hook) for m in names]
    with torch.no_grad():
        model.extract_feat(torch.zeros(1, 3, 300, 300))
        model.bbox_head(model.extract_feat(torch.zeros(1, 3, 300, 300)))
    for h in handles:
        h.remove()
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--config', default='configs/fsnet_ssd300_voc.py')
    parser.add_argument('--batch', type=int, default=8)
    parser.add_argument('--reps', type=int, default=5)
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--widen', type=float, default=1.0,
                        help='width multiplier: below 1, the FS model of '
                        'bench_ssd300.py --widen (ignores --config)')
    args = parser.parse_args()
    config, options = args.config, None
    if args.widen != 1:
        from bench_ssd300 import model_configs
        config, options = model_configs(args.widen)['fs']
    torch.manual_seed(0)
    print(f'device {args.device}, batch {args.batch}, width {args.widen:g}, '
          f'{args.reps} interleaved repetitions, torch threads '
          f'{torch.get_num_threads()}')
    header = (f'{"layer":<30} {"C->K":>10} {"k/d":>5} {"HxW":>7} '
              f'{"train dense ms":>14} {"FS ms":>8} {"ratio":>6} '
              f'{"eval dense ms":>13} {"FS ms":>8} {"ratio":>6}')
    print(header + '\n' + '-' * len(header))
    worst_train = worst_eval = worst_5x5 = 0.0
    tot = dict(td=0.0, tf=0.0, ed=0.0, ef=0.0)
    for name, fs, shape, out in ssd300_layer_shapes(config, options):
        fs = fs.to(args.device).train()
        dense = fs.to_conv2d().train()
        x = torch.randn(args.batch, *shape, device=args.device)

        def step(m):
            return lambda: m(x).sum().backward()

        def infer(m):
            def run():
                with torch.no_grad():
                    m(x)
            return run

        t = interleaved({'td': step(dense), 'tf': step(fs)}, args.reps,
                        device=args.device)
        dense.eval(), fs.eval()
        e = interleaved({'ed': infer(dense), 'ef': infer(fs)}, args.reps,
                        device=args.device)
        r_train = med(t['tf']) / med(t['td'])
        r_eval = med(e['ef']) / med(e['ed'])
        worst_train, worst_eval = max(worst_train, r_train), max(worst_eval, r_eval)
        if min(out) >= 5:
            worst_5x5 = max(worst_5x5, r_train)
        for k, v in {**t, **e}.items():
            tot[k] += med(v)
        print(f'{name:<30} {f"{fs.in_channels}->{fs.out_channels}":>10} '
              f'{f"{fs.kernel_size[0]}/{fs.dilation[0]}":>5} '
              f'{f"{shape[1]}x{shape[2]}":>7} {med(t["td"]) * 1e3:>14.2f} '
              f'{med(t["tf"]) * 1e3:>8.2f} {r_train:>6.3f} '
              f'{med(e["ed"]) * 1e3:>13.2f} {med(e["ef"]) * 1e3:>8.2f} '
              f'{r_eval:>6.3f}   (spread {spread(t["tf"]):.0%})')
    print('-' * len(header))
    print(f'{"sum over layers":<56} {tot["td"] * 1e3:>14.1f} {tot["tf"] * 1e3:>8.1f} '
          f'{tot["tf"] / tot["td"]:>6.3f} {tot["ed"] * 1e3:>13.1f} '
          f'{tot["ef"] * 1e3:>8.1f} {tot["ef"] / tot["ed"]:>6.3f}')
    print(f'worst layer: train {worst_train:.3f}x (output >= 5x5: '
          f'{worst_5x5:.3f}x), eval {worst_eval:.3f}x')


if __name__ == '__main__':
    main()
