"""Fixes for mmengine 0.10.7 / mmdet 3.3.0 on torch 2.13 (README "Compatibility").

Applied once when ``fsnet_mmdet`` is imported; each fix checks that it is
still needed, so newer releases that fix the problem upstream are left alone.

1. Checkpoint loading. torch >= 2.6 loads with ``weights_only=True`` by default
   and mmengine 0.10.7 calls ``torch.load`` without the argument, so every
   checkpoint a Runner saved (it pickles a ``MessageHub`` of ``HistoryBuffer``
   objects holding numpy arrays and bound methods) fails to load. We replace
   mmengine's local-file loader with :func:`load_checkpoint_file`: files of
   tensors and plain containers load with ``weights_only=True``; a file
   that references exactly the globals of a Runner checkpoint, which the user
   asked to load (``tools/test.py``, ``--resume``, ``load_from``,
   ``init_detector``), is fully unpickled with a warning; anything else is
   refused. ``FSNET_WEIGHTS_ONLY=1`` refuses every full unpickle.
2. CPU distributed training. mmengine 0.10.7's ``_init_dist_pytorch`` calls
   ``torch.cuda.set_device`` even without CUDA. On a machine without CUDA we
   initialize the process group without it, and refuse ``nccl`` with a message
   (CPU needs ``gloo``). Its Runner also wraps the model in DDP with
   ``device_ids=[LOCAL_RANK]``, which torch rejects for a CPU module: we drop
   ``device_ids`` when the module is on the CPU.
3. Runner checkpoints (reliability, any version): saved atomically (a
   temporary file renamed into place), and a load error names the file;
   ``tools/test.py`` loads strictly (:func:`strict_loading`).
4. SSDHead prediction. mmdet 3.3.0's ``SSDHead`` skips ``AnchorHead.__init__``
   and so has no ``loss_cls``, which ``BaseDenseHead._predict_by_feat_single``
   reads: every SSD config fails in test/inference (mmdet issues #11780,
   #11305). SSD uses softmax scores, so ``loss_cls`` is set to None (no custom
   class channels), which is what prediction needs.
5. VOC per-class table. mmdet 3.3.0's ``VOCMetric`` names the rows of its
   per-class AP table with the 20 VOC names whenever the dataset is of a
   VOC2007/VOC2012 type, whatever its ``metainfo`` classes: a VOC-layout
   dataset with its own classes was reported as aeroplane, bicycle, ... We
   evaluate such a dataset under its own class names (the AP values do not
   depend on the names; only the table's labels change).
6. mmcv ops under bfloat16 autocast on the CPU. mmcv 2.1.0's CPU kernels of
   ``nms`` and ``roi_align`` take float32 only, so a two-stage detector
   trained with :class:`~fsnet_mmdet.engine.optim.BF16OptimWrapper` (the RPN's
   proposals, the RoI features) fails with "expected scalar type Float but
   found BFloat16". Under CPU autocast those two ops run in float32 (and
   ``RoIAlign`` returns its input's dtype, which the RoI extractor writes
   into); without autocast, unchanged.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch

from ..utils.patching import wrap_attribute
from .checkpoint import load_checkpoint_file

__all__ = ['apply_patches', 'strict_loading']


def _register_checkpoint_loader() -> None:
    from mmengine.runner.checkpoint import CheckpointLoader

    from ..compression import bsf, int8
    from ..layers.wq import decompress, is_compressed

    @CheckpointLoader.register_scheme(prefixes='', force=True)
    def load_from_local(filename, map_location):
        checkpoint = load_checkpoint_file(filename, map_location)
        if is_compressed(checkpoint):
            checkpoint = decompress(checkpoint, filename)
        elif int8.is_int8_checkpoint(checkpoint):
            checkpoint = int8.decompress(checkpoint, filename)
        elif bsf.is_bsf_checkpoint(checkpoint):
            checkpoint = bsf.decompress_bsf(checkpoint, filename)
        return checkpoint


def _init_dist_pytorch_cpu(original):
    """mmengine's ``_init_dist_pytorch``, working without CUDA."""

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

    return init


def _ddp_init_cpu(original):
    """``MMDistributedDataParallel.__init__`` without ``device_ids`` on CPU."""

    def __init__(self, module, *args, **kwargs):
        on_cpu = all(p.device.type == 'cpu' for p in module.parameters())
        if on_cpu and kwargs.get('device_ids') is not None:
            kwargs['device_ids'] = None  # the Runner passes [LOCAL_RANK]
        original(self, module, *args, **kwargs)

    return __init__


def _patch_cpu_distributed() -> None:
    from mmengine.dist import utils
    from mmengine.model import MMDistributedDataParallel

    wrap_attribute(utils, '_init_dist_pytorch', _init_dist_pytorch_cpu)
    wrap_attribute(MMDistributedDataParallel, '__init__', _ddp_init_cpu)


def _ssd_head_init(original):
    """``SSDHead.__init__`` that leaves ``loss_cls = None`` for prediction."""

    def __init__(self, *args, **kwargs):
        original(self, *args, **kwargs)
        if not hasattr(self, 'loss_cls'):
            self.loss_cls = None

    return __init__


def _voc_metric_own_classes(original):
    """``VOCMetric.compute_metrics`` that labels the table with the dataset's classes."""
    from mmdet.datasets import VOCDataset

    voc_classes = tuple(VOCDataset.METAINFO['classes'])

    def compute_metrics(self, results):
        meta = self.dataset_meta or {}
        if tuple(meta.get('classes', voc_classes)) == voc_classes or \
                'dataset_type' not in meta:
            return original(self, results)
        # Without a VOC dataset_type, VOCMetric passes the class names on.
        self._dataset_meta = {k: v for k, v in meta.items()
                              if k != 'dataset_type'}
        try:
            return original(self, results)
        finally:
            self._dataset_meta = meta

    return compute_metrics


_strict = {'enabled': False}


@contextmanager
def strict_loading(enabled: bool = True) -> Iterator[None]:
    """Within the block, ``Runner.load_checkpoint`` loads strictly (every
    key present, every shape equal): ``tools/test.py`` evaluates the weights
    it was given or fails, never other weights."""
    before = _strict['enabled']
    _strict['enabled'] = enabled
    try:
        yield
    finally:
        _strict['enabled'] = before


def _atomic_save(original):
    """mmengine's ``save_checkpoint``; local files are written atomically."""
    from ..utils.io import save_atomic

    def save_checkpoint(checkpoint, filename, *args, **kwargs):
        if '://' in str(filename) or args or any(kwargs.values()):
            return original(checkpoint, filename, *args, **kwargs)
        save_atomic(checkpoint, str(filename))  # never a half-written file

    return save_checkpoint


def _load_naming_file(original):
    """``Runner.load_checkpoint``: strict under :func:`strict_loading`, errors
    that name the file."""

    def load_checkpoint(self, filename, map_location='cpu', strict=False,
                        revise_keys=[(r'^module.', '')]):
        strict = strict or _strict['enabled']
        try:
            return original(self, filename, map_location, strict, revise_keys)
        except (ValueError, RuntimeError, KeyError) as err:
            if str(filename) in str(err):
                raise
            raise type(err)(f'{filename}: {err}') from err

    return load_checkpoint


def _patch_runner_checkpoints() -> None:
    from mmengine.runner import Runner
    from mmengine.runner import runner as runner_module

    wrap_attribute(runner_module, 'save_checkpoint', _atomic_save)
    wrap_attribute(Runner, 'load_checkpoint', _load_naming_file)


def _nms_float32_under_cpu_autocast(original):
    return torch.amp.custom_fwd(original, device_type='cpu',
                                cast_inputs=torch.float32)


def _roi_align_float32_under_cpu_autocast(original):
    def forward(self, input, rois):
        if not (input.device.type == 'cpu' and torch.is_autocast_enabled('cpu')):
            return original(self, input, rois)
        with torch.autocast('cpu', enabled=False):
            return original(self, input.float(), rois.float()).to(input.dtype)
    return forward


def apply_patches() -> None:
    """Apply every fix above that the installed versions still need."""
    from mmengine.utils import digit_version
    import mmengine

    # Also reads compressed (WQ, int8, BSF) checkpoints, so it is registered
    # on any version.
    _register_checkpoint_loader()
    if digit_version(mmengine.__version__) <= digit_version('0.10.7'):
        _patch_cpu_distributed()
    from mmdet.models.dense_heads import SSDHead
    wrap_attribute(SSDHead, '__init__', _ssd_head_init)
    from mmdet.evaluation import VOCMetric
    wrap_attribute(VOCMetric, 'compute_metrics', _voc_metric_own_classes)
    _patch_runner_checkpoints()
    from mmcv.ops import RoIAlign
    from mmcv.ops.nms import NMSop
    wrap_attribute(NMSop, 'forward', _nms_float32_under_cpu_autocast)
    wrap_attribute(RoIAlign, 'forward', _roi_align_float32_under_cpu_autocast)
