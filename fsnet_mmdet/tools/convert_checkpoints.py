"""``tools/convert.py``, ``tools/quantize.py``, ``tools/bake.py``: checkpoint conversions.

Dense -> FS (least-squares summaries), FS -> compressed WQ, FS -> stock mmdet
SSD300; the functions behind them are in :mod:`fsnet_mmdet.conversion`.
"""
import argparse
import os
from typing import List, Optional, Tuple

from torch import nn

from ..engine.checkpoint import load_into, read_checkpoint
from ..conversion.checkpoints import (check_state_dict, fs_layers, plain_meta,
                                      save_weights,
                                      project_state_dict, to_stock_ssd300)
from ..layers.accounting import count_params
from ..layers.wq import compress_state_dict
from ..utils.io import save_atomic
from . import one_line_errors
from .count_params import build_model_from_config


def _parser(description: str, config: str, checkpoint: str,
            out: str) -> argparse.ArgumentParser:
    """The three positional arguments every conversion tool takes."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument('config', help=config)
    parser.add_argument('checkpoint', help=checkpoint)
    parser.add_argument('out', help=out)
    return parser


def _parse(argv: Optional[List[str]], *args: str) -> argparse.Namespace:
    return _parser(*args).parse_args(argv)


def _fs_model(args: argparse.Namespace, what: str) -> Tuple[nn.Module, List[str]]:
    """The config's model and its FS layers; refuses a model without any."""
    model = build_model_from_config(args.config)
    layers = fs_layers(model)
    if not layers:
        raise ValueError(f'{args.config}: the model has no FSConv or FSLinear '
                         f'layer, nothing to {what}; {args.out} not written')
    return model, layers


@one_line_errors
def quantize_main(argv: Optional[List[str]] = None) -> None:
    args = _parse(
        argv, 'Write a compressed FSNet-WQ checkpoint: every filter summary '
        'as uint8 codes plus its min and max (paper Sec. 3.1), the rest as it '
        'was. Loads with torch.load(weights_only=True).',
        'config of the FS model', 'trained float checkpoint',
        'compressed checkpoint to write')
    model, layers = _fs_model(args, 'quantize')
    meta = load_into(model, args.checkpoint)
    compressed = compress_state_dict(
        model.state_dict(), [f'{n}.summary' for n in layers],
        dict(plain_meta(meta), source=os.path.basename(args.checkpoint)))
    size = save_atomic(compressed, args.out)
    report = count_params(model)
    print(f'{args.out}: {size:,} bytes; {len(layers)} summaries quantized to '
          f'8 bits\neffective parameters {report.effective_wq:,.0f} '
          f'({report.effective_wq / 1e6:.2f}M; dense {report.dense / 1e6:.2f}M, '
          f'ratio {report.dense / report.effective_wq:.1f}x); '
          f'bytes / (4 x effective) = {size / (4 * report.effective_wq):.3f}')


@one_line_errors
def bake_main(argv: Optional[List[str]] = None) -> None:
    args = _parse(
        argv, 'Export an FS (float or WQ) or dense SSD300-BN checkpoint as a '
        'standard MMDetection SSD300 checkpoint: dense Conv2d weights, BN '
        'folded into the convs. Load it with mmdet::pascal_voc/'
        'ssd300_voc0712.py, without this plugin.',
        'config of the trained model', 'its checkpoint (float or compressed)',
        'stock SSD300 checkpoint to write')

    model = build_model_from_config(args.config)
    meta = load_into(model, args.checkpoint)
    state = to_stock_ssd300(model)
    size = save_weights(args.out, state, meta)
    print(f'{args.out}: {size:,} bytes, {sum(v.numel() for v in state.values()):,} '
          f'parameters; config: mmdet::pascal_voc/ssd300_voc0712.py')


def _train_batches(config: str):
    """The config's train dataloader (its pipeline and batch size), seeded."""
    from mmengine.config import Config
    from mmengine.runner import Runner
    return Runner.build_dataloader(Config.fromfile(config).train_dataloader,
                                   seed=0)


def _recalibrate(model: nn.Module, config: str, num_batches: int) -> int:
    """Re-estimate the model's BatchNorm statistics on ``num_batches`` batches
    of the config's train dataloader."""
    from ..conversion.recalibration import recalibrate_batchnorm
    return recalibrate_batchnorm(model, _train_batches(config), num_batches)


def _reconstruct(model: nn.Module, config: str, dense_state: dict,
                 num_batches: int) -> None:
    """Fit the model's FS convs to the dense model's outputs on
    ``num_batches`` training batches; prints each layer's output error."""
    import itertools

    from ..conversion.reconstruction import dense_twin, reconstruct
    twin = dense_twin(model, dense_state)
    batches = list(itertools.islice(_train_batches(config), num_batches))
    report = reconstruct(model, twin, batches)
    width = max(len(name) for name, _, _ in report)
    print(f'{"layer":<{width}}  output error ||Y_fs - Y|| / ||Y||: '
          f'projected -> reconstructed')
    for name, before, after in report:
        print(f'{name:<{width}}  {before:.4f} -> {after:.4f}')


def _permute(model: nn.Module, config: str, dense_state: dict,
             steps: int) -> dict:
    """The dense state dict with its channels reordered for the projection
    (:func:`~fsnet_mmdet.conversion.permutation.permute_for_fs`, traced and
    checked on one training batch); prints each channel space's result."""
    from ..conversion.permutation import permute_for_fs
    from ..conversion.reconstruction import dense_twin
    twin = dense_twin(model, dense_state)
    inputs = model.data_preprocessor(next(iter(_train_batches(config))),
                                     training=False)['inputs']
    report = permute_for_fs(twin, model, inputs, steps=steps)
    width = max(len(space.producer) for space, _, _ in report)
    print(f'{"channels of":<{width}}  kept by the projection '
          f'(sum over its FS layers of 1 - ||W - P(W)||^2 / ||W||^2)')
    for space, before, after in report:
        print(f'{space.producer:<{width}}  ' + (
            f'left alone: {space.blocked}' if space.blocked else
            f'{before:.4f} -> {after:.4f}'))
    return twin.state_dict()


@one_line_errors
def convert_main(argv: Optional[List[str]] = None) -> None:
    parser = _parser(
        'Start an FS model from a trained dense checkpoint: every '
        'FSConv / FSLinear of the config\'s model gets the least-squares '
        'summary of the dense layer of the same name (each summary element '
        'the mean of the dense weights that map to it); prints how far each '
        'layer\'s filters are from the dense ones. Fine-tune the result with '
        'tools/train.py --cfg-options load_from=OUT.',
        'config of the FS model',
        'dense checkpoint (same detector, dense convs / linear layers)',
        'FS checkpoint to write')
    parser.add_argument(
        '--recalibrate-bn', type=int, default=0, metavar='N',
        help='after the projection, re-estimate every BatchNorm\'s running '
        'statistics on N batches of the config\'s train_dataloader (forward '
        'passes, no training); 0 (default): keep the dense model\'s')
    parser.add_argument(
        '--reconstruct', type=int, default=0, metavar='N',
        help='after the projection, fit every FSConv\'s summary, layer by '
        'layer, so that its outputs match the dense layer\'s on N batches of '
        'the config\'s train_dataloader (output reconstruction; no '
        'training); 0 (default): the projection only')
    parser.add_argument(
        '--permute', type=int, default=0, metavar='STEPS',
        help='before the projection, reorder the dense model\'s channels '
        '(a conv\'s outputs with its BatchNorm and the next convs\' inputs: '
        'the function is unchanged, checked) so that the weights that will '
        'share summary elements are similar; STEPS greedy swap steps per '
        'channel space; 0 (default): keep the order')
    args = parser.parse_args(argv)
    for option in ('recalibrate_bn', 'reconstruct', 'permute'):
        if getattr(args, option) < 0:
            parser.error(f'--{option.replace("_", "-")} must be >= 0 '
                         f'(batches), got {getattr(args, option)}')
    model, _ = _fs_model(args, 'convert')
    dense_state, meta = read_checkpoint(args.checkpoint)
    if args.permute:
        dense_state = _permute(model, args.config, dense_state, args.permute)
    try:
        state, report = project_state_dict(model, dense_state)
    except ValueError as err:
        raise ValueError(f'{args.checkpoint}: {err}') from None
    check_state_dict(model, state, args.checkpoint)
    model.load_state_dict(state)
    if args.reconstruct:
        _reconstruct(model, args.config, dense_state, args.reconstruct)
    if args.recalibrate_bn:
        used = _recalibrate(model, args.config, args.recalibrate_bn)
        print(f'BatchNorm statistics re-estimated on {used} training batches')
    size = save_weights(args.out, model.state_dict(), meta,
                        source=os.path.basename(args.checkpoint))
    width = max(len(p.name) for p in report)
    print(f'{"layer":<{width}}  relative error ||W - W_fs|| / ||W||')
    for p in report:
        print(f'{p.name:<{width}}  {p.relative_error:.4f}')
    total = (sum(p.error_norm ** 2 for p in report) /
             sum(p.dense_norm ** 2 for p in report)) ** 0.5
    print(f'{len(report)} layers projected; all of them: {total:.4f}\n'
          f'{args.out}: {size:,} bytes')
