"""Per-layer parameter table of a detector config (``tools/count_params.py``)."""
import argparse
from typing import List, Optional

from mmengine.config import Config, DictAction
from mmengine.registry import init_default_scope
from torch import nn

from ..layers.accounting import ModelParams, count_params


def build_model_from_config(config: str,
                            cfg_options: Optional[dict] = None) -> nn.Module:
    """Build the ``model`` of a config file (its ``custom_imports`` included)."""
    cfg = Config.fromfile(config)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    init_default_scope(cfg.get('default_scope', 'mmdet'))
    from mmdet.registry import MODELS
    return MODELS.build(cfg.model)


def format_table(report: ModelParams, per_layer: bool = True) -> str:
    """The report as text: one row per conv and linear layer, then the totals."""
    rows: List[str] = []
    header = f'{"layer":<34} {"dense":>12} {"stored":>12} {"ratio":>7}'
    if per_layer:
        rows += [header, '-' * len(header)]
        rows += [f'{layer.name:<34} {layer.dense:>12,} {layer.stored:>12,} '
                 f'{layer.ratio:>7.2f}' for layer in report.layers]
        rows.append('-' * len(header))
    rows.append(f'{"total (all parameters)":<34} {report.dense:>12,} '
                f'{report.stored:>12,} {report.ratio:>7.2f}')
    rows.append(f'dense-equivalent {report.dense / 1e6:.2f}M, '
                f'stored {report.stored / 1e6:.2f}M, '
                f'8-bit summaries (WQ, effective) '
                f'{report.effective_wq / 1e6:.2f}M')
    rows.append(f'stored bits {report.bits:,} (effective: bits / 32 = '
                f'{report.effective / 1e6:.2f}M)')
    return '\n'.join(rows)


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(
        description='Print dense-equivalent and stored parameters per conv '
        'and linear layer of a config\'s model, and the totals.')
    parser.add_argument('config', help='config file path')
    parser.add_argument('--totals-only', action='store_true',
                        help='print only the totals')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config settings, key=value')
    args = parser.parse_args(argv)
    model = build_model_from_config(args.config, args.cfg_options)
    print(format_table(count_params(model), per_layer=not args.totals_only))
