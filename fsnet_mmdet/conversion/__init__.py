"""Conversion between dense and FS models, one family.

* :mod:`.modules`: dense -> FS *modules* in a built model (``fs_convert``:
  every conv, optionally every linear layer, of any detector).
* :mod:`.predictors`: where the weight sharing belongs in each known
  detection head's predictors (the ``interleave`` fs_convert gives them).
* :mod:`.checkpoints`: *state dicts*: a dense checkpoint projected onto an FS
  model (least squares), an FS model baked into a stock mmdet SSD300
  checkpoint, and the strict checks every conversion runs first.
* :mod:`fsnet_mmdet.layers.wq`: the 8-bit (WQ) summaries and the
  compressed checkpoint format.

The command-line tools on top (``tools/convert.py``, ``tools/quantize.py``,
``tools/bake.py``) live in :mod:`fsnet_mmdet.tools.convert_checkpoints`.
"""
from .checkpoints import (Projection, check_state_dict, fs_layers,
                          project_state_dict, to_stock_ssd300)
from .modules import (FS_CONVERT_KEY, ConversionReport, convert_to_fs,
                      install_build_hook)
from .predictors import HEAD_PREDICTORS, Predictor, find_predictors

__all__ = ['FS_CONVERT_KEY', 'ConversionReport', 'HEAD_PREDICTORS',
           'Predictor', 'Projection', 'check_state_dict', 'convert_to_fs',
           'find_predictors', 'fs_layers',
           'install_build_hook', 'project_state_dict', 'to_stock_ssd300']
