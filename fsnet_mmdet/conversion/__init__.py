"""Everything that starts from a dense model, one family.

* :mod:`.modules`: dense -> FS *modules* in a built model (``fs_convert``:
  every conv, optionally every linear layer, of any detector).
* :mod:`.predictors`: where the weight sharing belongs in each known
  detection head's predictors (the ``interleave`` fs_convert gives them).
* :mod:`.checkpoints`: *state dicts*: a dense checkpoint projected onto an FS
  model (least squares), an FS model baked into a stock mmdet SSD300
  checkpoint, and the strict checks every conversion runs first.
* :mod:`.permutation`: filter orders that shrink the projection error.
* :mod:`.regularization`: fine-tuning a dense model towards the FS structure.
* :mod:`.distillation`: channel-wise distillation from a dense teacher.
* :mod:`.reconstruction`, :mod:`.recalibration`: refitting summaries to the
  dense model's outputs; BatchNorm statistics re-estimated.

Their training hooks are in :mod:`fsnet_mmdet.engine.hooks`, the command-line
tools on top in :mod:`fsnet_mmdet.tools.convert_checkpoints`.
"""
from .checkpoints import (Projection, check_state_dict, fs_layers,
                          project_state_dict, to_stock_ssd300)
from .modules import FS_CONVERT_KEY, ConversionReport, convert_to_fs
from .predictors import HEAD_PREDICTORS, Predictor, find_predictors

__all__ = ['FS_CONVERT_KEY', 'ConversionReport', 'HEAD_PREDICTORS',
           'Predictor', 'Projection', 'check_state_dict', 'convert_to_fs',
           'find_predictors', 'fs_layers', 'project_state_dict',
           'to_stock_ssd300']
