"""Fixes for mmengine 0.10.7 / mmdet 3.3.0 on torch 2.13 (README "Compatibility").

Applied once when ``fsnet_mmdet`` is imported; each fix checks that it is
still needed, so newer releases that fix the problem upstream are left alone.

1. Checkpoint loading. torch >= 2.6 loads with ``weights_only=True`` by default
   and mmengine 0.10.7 calls ``torch.load`` without the argument, so every
   checkpoint a Runner saved (it pickles a ``MessageHub`` of ``HistoryBuffer``
   objects holding numpy arrays) fails to load. We replace mmengine's
   local-file loader with :func:`load_checkpoint_file`: it allows exactly the
   mmengine and numpy classes a Runner checkpoint holds and keeps
   ``weights_only=True`` - no code from the file runs. Only a file that needs
   other classes falls back to a full unpickle, with a warning, and only when
   the user asked to load it (``tools/test.py``, ``--resume``, ``load_from``,
   ``init_detector``); ``FSNET_WEIGHTS_ONLY=1`` refuses that fallback.
2. CPU distributed training. mmengine 0.10.7's ``_init_dist_pytorch`` calls
   ``torch.cuda.set_device`` even without CUDA. On a machine without CUDA we
   initialize the process group without it, and refuse ``nccl`` with a message
   (CPU needs ``gloo``).
3. SSDHead prediction. mmdet 3.3.0's ``SSDHead`` skips ``AnchorHead.__init__``
   and so has no ``loss_cls``, which ``BaseDenseHead._predict_by_feat_single``
   reads: every SSD config fails in test/inference (mmdet issues #11780,
   #11305). SSD uses softmax scores, so ``loss_cls`` is set to None (no custom
   class channels), which is what prediction needs.
"""
from __future__ import annotations

import functools
import os
import pickle
import warnings
from typing import Any, Optional

import numpy as np
import torch

__all__ = ['load_checkpoint_file', 'apply_patches']


def _safe_globals() -> list:
    """Classes a Runner checkpoint holds besides tensors (all data-only)."""
    from mmengine.logging import HistoryBuffer
    from mmengine.config import ConfigDict

    dtypes = [type(np.dtype(t)) for t in
              ('float16', 'float32', 'float64', 'int8', 'int16', 'int32',
               'int64', 'uint8', 'bool')]
    return [
        HistoryBuffer, ConfigDict, np.ndarray, np.dtype, *dtypes,
        np.core.multiarray._reconstruct, np.core.multiarray.scalar,
    ]


def load_checkpoint_file(filename: str,
                         map_location: Any = None,
                         allow_unsafe: Optional[bool] = None) -> Any:
    """Load a checkpoint file with ``weights_only=True`` where possible.

    Args:
        filename: path of the file.
        map_location: as :func:`torch.load`.
        allow_unsafe: fall back to a full unpickle (runs code from the file)
            when the file holds classes outside the allowlist. Defaults to
            True unless the environment sets ``FSNET_WEIGHTS_ONLY=1``.

    Returns:
        The loaded object.

    Raises:
        FileNotFoundError: no such file.
        RuntimeError: the file is truncated, corrupted or not a torch
            checkpoint, or needs a full unpickle that is not allowed; the
            message names the file.
    """
    filename = os.path.expanduser(filename)
    if not os.path.isfile(filename):
        raise FileNotFoundError(f'{filename} can not be found.')
    if allow_unsafe is None:
        allow_unsafe = os.environ.get('FSNET_WEIGHTS_ONLY', '0') != '1'
    try:
        with torch.serialization.safe_globals(_safe_globals()):
            return torch.load(filename, map_location=map_location,
                              weights_only=True)
    except pickle.UnpicklingError as err:
        if 'Weights only load failed' not in str(err):
            raise RuntimeError(
                f'{filename}: not a readable checkpoint ({err})') from err
        if not allow_unsafe:
            raise RuntimeError(
                f'{filename}: holds Python objects outside the weights-only '
                f'allowlist and FSNET_WEIGHTS_ONLY=1 forbids a full unpickle '
                f'({str(err).splitlines()[-1]})') from err
        warnings.warn(
            f'{filename}: holds Python objects beyond tensors; loading it with '
            f'a full unpickle, which runs code from the file. Only load '
            f'checkpoints you trust (set FSNET_WEIGHTS_ONLY=1 to refuse).')
    except (RuntimeError, EOFError, OSError, ValueError) as err:
        raise RuntimeError(f'{filename}: truncated, corrupted or not a torch '
                           f'checkpoint ({type(err).__name__}: {err})') from err
    return torch.load(filename, map_location=map_location, weights_only=False)


def _patch_checkpoint_loader() -> None:
    from mmengine.runner.checkpoint import CheckpointLoader

    @CheckpointLoader.register_scheme(prefixes='', force=True)
    def load_from_local(filename, map_location):
        return load_checkpoint_file(filename, map_location)


def _init_dist_pytorch_cpu(original):
    """Wrap mmengine's ``_init_dist_pytorch`` to work without CUDA."""

    @functools.wraps(original)
    def init(backend, init_backend='torch', **kwargs):
        if torch.cuda.is_available():
            return original(backend, init_backend=init_backend, **kwargs)
        if backend == 'nccl':
            raise ValueError(
                "env_cfg.dist_cfg.backend='nccl' needs CUDA, which this "
                "machine does not have; use backend='gloo' on CPU (e.g. "
                "--cfg-options env_cfg.dist_cfg.backend=gloo)")
        if init_backend != 'torch':
            raise ValueError(f'init_backend={init_backend!r} is not supported '
                             f"on CPU; allowed: 'torch'")
        torch.distributed.init_process_group(backend=backend, **kwargs)

    init.fsnet_patched = True
    return init


def _patch_cpu_distributed() -> None:
    from mmengine.dist import utils

    if not getattr(utils._init_dist_pytorch, 'fsnet_patched', False):
        utils._init_dist_pytorch = _init_dist_pytorch_cpu(
            utils._init_dist_pytorch)


def _patch_ssd_head() -> None:
    from mmdet.models.dense_heads import SSDHead

    original = SSDHead.__init__
    if getattr(original, 'fsnet_patched', False):
        return

    @functools.wraps(original)
    def __init__(self, *args, **kwargs):
        original(self, *args, **kwargs)
        if not hasattr(self, 'loss_cls'):
            self.loss_cls = None

    __init__.fsnet_patched = True
    SSDHead.__init__ = __init__


def apply_patches() -> None:
    """Apply every fix above that the installed versions still need."""
    from mmengine.utils import digit_version
    import mmengine

    if (digit_version(torch.__version__) >= digit_version('2.6.0')
            and digit_version(mmengine.__version__) <= digit_version('0.10.7')):
        _patch_checkpoint_loader()
    if digit_version(mmengine.__version__) <= digit_version('0.10.7'):
        _patch_cpu_distributed()
    _patch_ssd_head()
