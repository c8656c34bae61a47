"""FSNet filter-summary convolutions for MMDetection.

Importing this package registers every module it defines (``FSConv``,
``FSLinear`` and ``BSFConv`` in MMEngine's root ``MODELS``; ``FSSSD300``,
``FSSSDHead``, ``CheckedVOCDataset``, ``FiniteLossHook``, ``DFSSearchHook``,
``FSRegularizationHook`` and ``FSDistillationHook`` in MMDetection's
registries; ``BF16OptimWrapper`` in MMEngine's ``OPTIM_WRAPPERS``;
``KSEConv`` and the ``compression`` model key of
:mod:`fsnet_mmdet.compression`), applies the compatibility fixes of
:mod:`fsnet_mmdet.engine.compat` and lets a model config's ``fs_convert`` key
convert any detector (:mod:`fsnet_mmdet.conversion`). The families and their
dependencies: docs/architecture.md.
"""
from .compression import BSFConv
from .conversion import convert_to_fs
from .datasets import CheckedVOCDataset
from .engine import (BF16OptimWrapper, DFSSearchHook, FiniteLossHook,
                     FSDistillationHook, FSRegularizationHook, apply_patches,
                     install_build_hooks, load_checkpoint_file)
from .layers import (FSConv, FSLinear, LayerParams, ModelParams, count_params,
                     layer_params)
from .models import FSSSD300, FSSSDHead

apply_patches()
install_build_hooks()

__version__ = '0.1.0'
__all__ = [
    'BF16OptimWrapper', 'BSFConv', 'CheckedVOCDataset', 'DFSSearchHook',
    'FSConv', 'FSDistillationHook', 'FSLinear', 'FSRegularizationHook',
    'FSSSD300', 'FSSSDHead', 'FiniteLossHook', 'LayerParams', 'ModelParams',
    'convert_to_fs', 'count_params', 'layer_params', 'load_checkpoint_file'
]
