"""Config checks run by ``tools/train.py`` / ``tools/test.py`` before anything is built.

Each failure is one ``ValueError`` naming the config file, the key and the
allowed values, raised before data loading or training starts.
"""
from __future__ import annotations

import inspect
import os
from typing import Iterator, Tuple

import torch

def _walk(node, key: str = '') -> Iterator[Tuple[str, dict]]:
    """Every dict in a nested config with its dotted key."""
    if isinstance(node, dict):
        yield key, node
        for k, v in node.items():
            yield from _walk(v, f'{key}.{k}' if key else str(k))
    elif isinstance(node, (list, tuple)):
        for i, v in enumerate(node):
            yield from _walk(v, f'{key}.{i}')


def _leaf_datasets(key: str, dataset) -> Iterator[Tuple[str, dict]]:
    """The leaf datasets of a (Repeat/Concat/ClassBalanced) dataset config."""
    if not isinstance(dataset, dict):
        return
    if 'datasets' in dataset:
        for i, d in enumerate(dataset['datasets']):
            yield from _leaf_datasets(f'{key}.datasets.{i}', d)
    elif 'dataset' in dataset:
        yield from _leaf_datasets(f'{key}.dataset', dataset['dataset'])
    else:
        yield key, dataset


def _check_fs_convs(cfg, path: str) -> None:
    from ..layers.fsconv import FSConv
    from ..layers.fslinear import FSLinear
    from ..layers.extraction import GRAD_REDUCTIONS
    from ..layers.geometry import K3_PRESETS

    layers = {'FSConv': FSConv, 'FSLinear': FSLinear}
    for key, node in _walk(cfg.get('model', {}), 'model'):
        layer = layers.get(node.get('type'))
        if layer is None:
            continue
        params = inspect.signature(layer).parameters
        allowed = [p for p in params
                   if params[p].kind == inspect.Parameter.KEYWORD_ONLY]
        unknown = sorted(set(node) - {'type', *allowed})
        if unknown:
            raise ValueError(f'{path}: {key}.{unknown[0]} is not an '
                             f'{node["type"]} option; allowed: {allowed}')
        if node.get('preset', 'paper') not in K3_PRESETS:
            raise ValueError(f'{path}: {key}.preset={node["preset"]!r} is '
                             f'unknown; allowed: {sorted(K3_PRESETS)}')
        if node.get('grad_reduction', 'mean') not in GRAD_REDUCTIONS:
            raise ValueError(f'{path}: {key}.grad_reduction must be one of '
                             f'{GRAD_REDUCTIONS}')


def _check_model_builds(cfg, path: str) -> None:
    """Layer-dependent FS errors (sampling numbers, ratios, presets' entries)."""
    from mmengine.registry import init_default_scope

    from mmdet.registry import MODELS

    init_default_scope(cfg.get('default_scope', 'mmdet'))
    try:
        MODELS.build(cfg.model)
    except ValueError as err:
        raise ValueError(f'{path}: model: {err}') from None


def _check_data(cfg, path: str, training: bool) -> None:
    from mmdet.registry import DATASETS

    loaders = ['train_dataloader', 'val_dataloader'] if training else [
        'test_dataloader']
    head = cfg.get('model', {}).get('bbox_head') or cfg.get('model', {}).get(
        'roi_head', {}).get('bbox_head')
    num_classes = head.get('num_classes') if isinstance(head, dict) else None
    for name in loaders:
        loader = cfg.get(name)
        if not loader:
            continue
        if loader.get('persistent_workers') and not loader.get('num_workers'):
            raise ValueError(
                f'{path}: {name}.persistent_workers=True needs '
                f'{name}.num_workers > 0 (got {loader.get("num_workers")}); '
                f'set persistent_workers=False or num_workers >= 1')
        for key, dataset in _leaf_datasets(f'{name}.dataset',
                                           loader.get('dataset')):
            root = dataset.get('data_root', '')
            ann = dataset.get('ann_file', '')
            target = os.path.join(root, ann) if ann else root
            if target and not os.path.exists(target):
                what = 'data_root' if not os.path.isdir(root or '.') else 'ann_file'
                raise ValueError(
                    f'{path}: {key}.{what}: {target} does not exist (see the '
                    f'README for the VOCdevkit layout, or override it with '
                    f'--cfg-options {key}.data_root=...)')
            classes = (dataset.get('metainfo') or {}).get('classes')
            if not classes:  # the dataset class's own METAINFO
                dataset_cls = DATASETS.get(dataset.get('type', ''))
                classes = getattr(dataset_cls, 'METAINFO', {}).get('classes')
            expected = len(classes) if classes else None
            if num_classes is not None and expected is not None and \
                    num_classes != expected:
                raise ValueError(
                    f'{path}: model.bbox_head.num_classes={num_classes} but '
                    f'{key} ({dataset.get("type")}) has {expected} classes; '
                    f'set num_classes={expected}')


def _check_dist(cfg, path: str, launcher: str) -> None:
    if launcher == 'none' or torch.cuda.is_available():
        return
    backend = cfg.get('env_cfg', {}).get('dist_cfg', {}).get('backend')
    if backend == 'nccl':
        raise ValueError(
            f"{path}: env_cfg.dist_cfg.backend='nccl' needs CUDA, which this "
            f"machine does not have; allowed on CPU: 'gloo' (--cfg-options "
            f"env_cfg.dist_cfg.backend=gloo)")
    if cfg.get('sync_bn'):
        raise ValueError(
            f'{path}: sync_bn={cfg.sync_bn!r}: SyncBN runs on GPUs only; on '
            f'CPU use --cfg-options sync_bn=None (per-process BN)')


def check_config(cfg, path: str, launcher: str = 'none',
                 training: bool = True) -> None:
    """Check a config before training or testing; raise ValueError if bad.

    Args:
        cfg: the loaded config (after ``--cfg-options``).
        path: the config file, named in errors.
        launcher: the ``--launcher`` of the run.
        training: checks for tools/train.py (else tools/test.py).
    """
    _check_fs_convs(cfg, path)
    _check_dist(cfg, path, launcher)
    _check_data(cfg, path, training)
    _check_model_builds(cfg, path)
