"""The compression methods FSNet is compared with (each a layer or a pruning
step, a stored-bits count and a checkpoint format).

* :mod:`.int8`: per-output-channel 8-bit weights of a trained model.
* :mod:`.bsf`: binary stacked filters (Lan et al.): the ``BSFConv`` layer.
* :mod:`.kse`: kernel sparsity and entropy (Li et al., CVPR 2019): per input
  channel, its kernels clustered into fewer centroids; the ``KSEConv`` layer.
* :mod:`.lrf`: linearly replaceable filters (Joo et al., AAAI 2021): channel
  pruning with weights compensation, a physically smaller dense model.
* :mod:`.structure`: the ``compression`` model-config key that rebuilds a
  compressed model's layers from its config, and the parameter / FLOP counts.

Importing it (as ``import fsnet_mmdet`` does) registers ``BSFConv`` and
``KSEConv``; the ``compression`` config key is read by the build hook of
:mod:`fsnet_mmdet.engine.build_hooks`.
"""
from .bsf import BSFConv
from .kse import KSEConv, kse_from_conv2d, kse_indicator
from .lrf import lrf_prune_channels, ssd300_channel_groups
from .structure import COMPRESSION_KEY, apply_compression, model_flops

__all__ = ['BSFConv', 'COMPRESSION_KEY', 'KSEConv', 'apply_compression',
           'kse_from_conv2d', 'kse_indicator',
           'lrf_prune_channels', 'model_flops', 'ssd300_channel_groups']
