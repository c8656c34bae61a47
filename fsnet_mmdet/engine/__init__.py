"""The MMEngine / MMDetection glue: compatibility fixes (:mod:`.compat`),
checkpoint reading (:mod:`.checkpoint`), the ``fs_convert`` and
``compression`` build hooks (:mod:`.build_hooks`), config checks
(:mod:`.validate`), every training hook (:mod:`.hooks`) and the bfloat16
optimizer wrapper (:mod:`.optim`)."""
from .build_hooks import install_build_hooks
from .checkpoint import load_checkpoint_file, load_into, read_checkpoint
from .compat import apply_patches, strict_loading
from .hooks import (DFSSearchHook, FiniteLossHook, FSDistillationHook,
                    FSRegularizationHook)
from .optim import BF16OptimWrapper
from .validate import check_config

__all__ = ['BF16OptimWrapper', 'DFSSearchHook', 'FSDistillationHook',
           'FSRegularizationHook', 'FiniteLossHook', 'apply_patches',
           'check_config', 'install_build_hooks', 'load_checkpoint_file',
           'load_into', 'read_checkpoint', 'strict_loading']
