"""``tools/compress.py``: KSE or LRF applied to a trained dense detector.

Reads a config and its trained checkpoint, compresses the model
(:mod:`fsnet_mmdet.compression`), and writes under ``--out-dir``:

* ``config.py``: the source config, resolved, with the model's
  ``compression`` key (the new layer shapes), ``fsnet_mmdet.compression``
  in ``custom_imports`` and ``load_from`` set to the checkpoint beside it:
  ``tools/train.py OUT/config.py`` fine-tunes it;
* ``checkpoint.pth``: the compressed weights (tensors only; loads with
  ``weights_only=True``): ``tools/test.py OUT/config.py OUT/checkpoint.pth``;
* ``report.json``: settings, parameters and FLOPs before and after.

Every file is written atomically; the written pair is checked (the config's
model loads the checkpoint strictly and computes what the compressed model
computed) before the tool reports success.
"""
from __future__ import annotations

import argparse
import json
import os
import re
from typing import List, Optional, Tuple

import torch
from mmengine.config import Config, DictAction
from torch import nn

from ..utils.io import save_atomic, write_text_atomic

CONFIG_NAME, CHECKPOINT_NAME, REPORT_NAME = ('config.py', 'checkpoint.pth',
                                             'report.json')


def parse_target(text: str, source_params: int) -> float:
    """A ``--target``: a parameter count (``230000``, ``230k``, ``1.2M``) or
    a compression ratio of the source model (``8x``); returns parameters.

    Raises:
        ValueError: anything else, or a value <= 0 (names the option).
    """
    match = re.fullmatch(r'\s*([0-9]*\.?[0-9]+(?:e[0-9]+)?)\s*([kKmMxX]?)\s*',
                         str(text))
    if match:
        value, unit = float(match.group(1)), match.group(2).lower()
        if value > 0:
            if unit == 'x':
                return source_params / value
            return value * {'': 1, 'k': 1e3, 'm': 1e6}[unit]
    raise ValueError(f'--target must be a parameter count (e.g. 230000, 230k, '
                     f'1.2M) or a compression ratio (e.g. 8x), > 0; got {text!r}')



def _build(cfg: Config) -> nn.Module:
    from mmengine.registry import init_default_scope
    from mmdet.registry import MODELS
    init_default_scope(cfg.get('default_scope', 'mmdet'))
    return MODELS.build(cfg.model)


def _counts(model: nn.Module, image_size: Tuple[int, int]) -> dict:
    from ..compression.structure import model_flops
    from ..layers.accounting import count_params
    counts = count_params(model)
    # float32 parameters: every bit beyond 32 per parameter is an index's.
    return dict(params=counts.stored, index_bits=counts.bits - 32 * counts.stored,
                effective_params=counts.effective,
                flops=model_flops(model, image_size))


def compress_kse(model: nn.Module, args, source_params: int) -> Tuple[dict, List[str]]:
    """KSE in place; returns (compression dict, report lines)."""
    from ..compression import kse

    names = kse.kse_layer_names(model)
    layers = kse.kse_layers(model, names)
    others = source_params - sum(model.get_submodule(n).weight.numel()
                                 for n in names)
    if args.kse_t is not None:
        groups, t = args.kse_groups, args.kse_t
        how = f'G={groups}, T={t:g} (given)'
    else:
        target = parse_target(args.target, source_params)
        groups, t, count = kse.kse_setting_for_target(
            layers, others, target, args.kse_groups)
        how = (f'G={groups}, T={t:g}: the first G from {args.kse_groups} and '
               f'the smallest T that reach the target {target:,.0f} '
               f'(effective {count:,.0f})')
    layer_spec = kse.compress_kse(model, layers, groups, t, seed=args.seed)
    lines = [f'KSE: {how}; {len(layers)} convs (every dense conv but the '
             f'first), k-means seed {args.seed}']
    width = max(len(n) for n in names)
    lines.append(f'{"layer":<{width}}  kept/in  full  clustered  centroids')
    for name in names:
        q = layer_spec[name]['q']
        n = model.get_submodule(name).out_channels
        kept = sum(v > 0 for v in q)
        full = sum(v == n for v in q)
        lines.append(f'{name:<{width}}  {kept:>3}/{len(q):<3}  {full:>4}  '
                     f'{kept - full:>9}  {sum(q):>9,}')
    spec = dict(method='kse', layers=layer_spec,
                settings=dict(G=groups, T=t, seed=args.seed,
                              source=os.path.basename(args.checkpoint)))
    return spec, lines


def compress_lrf(model: nn.Module, args, source_params: int) -> Tuple[dict, List[str]]:
    """LRF in place; returns (compression dict, report lines)."""
    from ..compression import lrf
    from ..compression.structure import apply_compression

    groups = lrf.ssd300_channel_groups(model)
    if args.lrf_ratio is not None:
        ratio = args.lrf_ratio
        how = f'ratio {ratio:g} (given)'
    else:
        target = parse_target(args.target, source_params)
        ratio, count = lrf.ratio_for_target(model, groups, target)
        how = (f'ratio {ratio:.4f}: the smallest uniform ratio that reaches '
               f'the target {target:,.0f} ({count:,} parameters)')
    removals = lrf.removal_counts(model, groups, ratio)
    layers, state, report = lrf.prune_model_lrf(model, groups, removals)
    spec = dict(method='lrf', layers=layers,
                settings=dict(ratio=ratio,
                              source=os.path.basename(args.checkpoint)))
    apply_compression(model, spec)
    model.load_state_dict(state)
    model.eval()
    lines = [f'LRF: {how}; {len(report)} of {len(groups)} conv outputs pruned '
             f'(every conv of backbone and neck; BN folded into the fits)']
    if report:
        width = max(len(r.producer) for r in report)
        lines.append(f'{"layer":<{width}}  channels  mean ||eps|| / mean ||f||')
        lines += [f'{r.producer:<{width}}  {r.before:>4} -> {r.after:<4} '
                  f'{r.relative_residual:.4f}' for r in report]
    return spec, lines


def _check_pair(config: str, checkpoint: str, model: nn.Module,
                image_size: Tuple[int, int]) -> None:
    """The written config's model loads the checkpoint strictly and computes
    what ``model`` computes."""
    from ..conversion.checkpoints import check_state_dict
    from ..engine.checkpoint import read_checkpoint

    rebuilt = _build(Config.fromfile(config))
    state, _ = read_checkpoint(checkpoint)
    check_state_dict(rebuilt, state, checkpoint)
    rebuilt.load_state_dict(state)
    rebuilt.eval()
    model.eval()
    x = torch.randn(1, 3, *image_size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        a, b = model(x), rebuilt(x)
    flat_a = torch.cat([t.reshape(-1) for level in a for t in level])
    flat_b = torch.cat([t.reshape(-1) for level in b for t in level])
    if not torch.allclose(flat_a, flat_b, rtol=1e-4, atol=1e-5):
        raise RuntimeError(f'{config}: the rebuilt model does not compute what '
                           f'the compressed one does (max difference '
                           f'{(flat_a - flat_b).abs().max():.3g})')


def _table(before: dict, after: dict) -> str:
    rows = [f'{"":<12} {"parameters":>12} {"index bits":>12} '
            f'{"effective":>12} {"FLOPs":>16}']
    for label, c in (('source', before), ('compressed', after)):
        rows.append(f'{label:<12} {c["params"]:>12,} {c["index_bits"]:>12,} '
                    f'{c["effective_params"]:>12,.0f} {c["flops"]:>16,}')
    if 'flops_centroid_sharing' in after:
        rows.append(f'{"(KSE paper: centroid-sharing count)":<53} '
                    f'{after["flops_centroid_sharing"]:>16,}')
    rows.append(f'{"reduction":<12} '
                f'{before["params"] / after["params"]:>11.2f}x {"":>12} '
                f'{before["effective_params"] / after["effective_params"]:>11.2f}x'
                f' {before["flops"] / after["flops"]:>15.2f}x')
    return '\n'.join(rows)


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(
        description='Compress a trained dense detector with KSE (kernel '
        'clustering, Li et al. CVPR 2019) or LRF (channel pruning, Joo et al. '
        'AAAI 2021) and write a config + checkpoint to fine-tune with '
        'tools/train.py and evaluate with tools/test.py.')
    parser.add_argument('config', help='config of the trained dense model')
    parser.add_argument('checkpoint', help='its trained checkpoint')
    parser.add_argument('--method', required=True, choices=('kse', 'lrf'))
    parser.add_argument(
        '--target', help='size to reach: a parameter count (230000, 230k, '
        '1.2M; KSE counts index bits / 32 too) or a ratio of the source '
        'model\'s parameters (8x). KSE: G from --kse-groups up and the '
        'smallest T that reach it; LRF: the smallest uniform pruning ratio')
    parser.add_argument('--out-dir', required=True,
                        help='directory for config.py, checkpoint.pth, report.json')
    parser.add_argument('--kse-groups', type=int, default=4, metavar='G',
                        help='KSE: number of indicator groups G (the search '
                        'starts there; default 4, the authors\')')
    parser.add_argument('--kse-t', type=float, metavar='T',
                        help='KSE: T (>= 0) at G=--kse-groups instead of a --target')
    parser.add_argument('--lrf-ratio', type=float, metavar='P',
                        help='LRF: fraction of every pruned conv\'s output '
                        'channels to remove, in [0, 1), instead of a --target')
    parser.add_argument('--seed', type=int, default=0, help='KSE: k-means seed')
    parser.add_argument('--image-size', type=int, nargs=2, default=(300, 300),
                        metavar=('H', 'W'), help='image size the FLOPs are '
                        'counted at (default 300 300)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override settings of the source config, key=value')
    args = parser.parse_args(argv)
    knob = {'kse': ('kse_t', '--kse-t'), 'lrf': ('lrf_ratio', '--lrf-ratio')}
    own, flag = knob[args.method]
    other = knob['lrf' if args.method == 'kse' else 'kse']
    if getattr(args, other[0]) is not None:
        parser.error(f'{other[1]} is an option of --method '
                     f'{"lrf" if args.method == "kse" else "kse"}')
    if (args.target is None) == (getattr(args, own) is None):
        parser.error(f'--method {args.method} needs exactly one of --target '
                     f'and {flag}')
    try:
        _compress(args)
    except (ValueError, RuntimeError, FileNotFoundError) as err:
        raise SystemExit(f'error: {err}') from None


def _compress(args: argparse.Namespace) -> None:
    import fsnet_mmdet.compression  # noqa: F401  KSEConv, the build hook
    from ..compression.structure import COMPRESSION_KEY
    from ..conversion.checkpoints import check_state_dict, plain_meta
    from ..engine.checkpoint import read_checkpoint

    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    if COMPRESSION_KEY in cfg.model:
        raise ValueError(f'{args.config}: the model is already compressed '
                         f'(model.{COMPRESSION_KEY}); start from the dense one')
    model = _build(cfg)
    state, meta = read_checkpoint(args.checkpoint)
    check_state_dict(model, state, args.checkpoint)
    model.load_state_dict(state)
    model.eval()
    image_size = tuple(args.image_size)
    before = _counts(model, image_size)
    compress = compress_kse if args.method == 'kse' else compress_lrf
    spec, lines = compress(model, args, before['params'])
    model.eval()
    after = _counts(model, image_size)
    if args.method == 'kse':  # the paper's count, for reference
        from ..compression.kse import shared_flops_saving
        after['flops_centroid_sharing'] = after['flops'] - shared_flops_saving(
            model, image_size)

    out = os.path.abspath(args.out_dir)
    config_path = os.path.join(out, CONFIG_NAME)
    checkpoint_path = os.path.join(out, CHECKPOINT_NAME)
    cfg.model[COMPRESSION_KEY] = spec
    imports = list((cfg.get('custom_imports') or {}).get('imports', []))
    cfg.custom_imports = dict(
        imports=imports + [m for m in ('fsnet_mmdet', 'fsnet_mmdet.compression')
                           if m not in imports],
        allow_failed_imports=False)
    cfg.load_from = checkpoint_path
    header = (f'# Written by tools/compress.py --method {args.method} from '
              f'{os.path.abspath(args.config)}\n'
              f'# and {os.path.abspath(args.checkpoint)} (the source config, '
              f'resolved, with model.{COMPRESSION_KEY}).\n'
              f'# Fine-tune: python tools/train.py {config_path}\n')
    # Written under temporary names, checked, then renamed into place: on
    # any failure neither file appears (nor replaces an earlier one).
    tmp_config = os.path.join(out, f'.{CONFIG_NAME}.unchecked.py')
    tmp_checkpoint = os.path.join(out, f'.{CHECKPOINT_NAME}.unchecked')
    try:
        size = save_atomic({'meta': dict(plain_meta(meta), compression=dict(
            method=args.method, settings=spec['settings'])),
            'state_dict': model.state_dict()}, tmp_checkpoint)
        # Laid out by mmengine without yapf (seconds for KSE's per-channel
        # lists; fromfile ignores format_python_code in mmengine 0.10.7).
        text = Config(cfg.to_dict(), format_python_code=False).pretty_text
        write_text_atomic(tmp_config, header + text)
        _check_pair(tmp_config, tmp_checkpoint, model, image_size)
        os.replace(tmp_checkpoint, checkpoint_path)
        os.replace(tmp_config, config_path)
    finally:
        for path in (tmp_config, tmp_checkpoint):
            if os.path.exists(path):
                os.unlink(path)
    report = dict(method=args.method, settings=spec['settings'],
                  source_config=os.path.abspath(args.config),
                  source_checkpoint=os.path.abspath(args.checkpoint),
                  image_size=list(image_size), before=before, after=after,
                  checkpoint_bytes=size)
    write_text_atomic(os.path.join(out, REPORT_NAME),
                      json.dumps(report, indent=1) + '\n')
    print('\n'.join(lines))
    print(_table(before, after))
    print(f'{config_path}\n{checkpoint_path}: {size:,} bytes\n'
          f'fine-tune: python tools/train.py {config_path}\n'
          f'evaluate:  python tools/test.py {config_path} {checkpoint_path}')
