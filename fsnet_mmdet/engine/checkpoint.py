"""Reading checkpoint files: safely (``weights_only`` where possible), in any
of the package's formats (float, FS-WQ), with errors that name the file."""
from __future__ import annotations

import os
import pickle
import warnings
from typing import Any, Optional, Tuple

import torch
from torch import nn

from ..conversion.checkpoints import check_state_dict
from ..layers.wq import decompress, is_compressed

__all__ = ['RUNNER_CHECKPOINT_GLOBALS', 'load_checkpoint_file', 'load_into',
           'read_checkpoint']


#: Globals a checkpoint saved by an MMEngine Runner references besides
#: tensors: its MessageHub pickles HistoryBuffer objects (numpy arrays, and
#: their statistics methods rebuilt with ``getattr``).
RUNNER_CHECKPOINT_GLOBALS = frozenset({
    'builtins.getattr',
    'mmengine.logging.history_buffer.HistoryBuffer',
    'numpy.ndarray',
    'numpy.dtype',
    'numpy._core.multiarray._reconstruct',
    'numpy._core.multiarray.scalar',
    'numpy.core.multiarray._reconstruct',
    'numpy.core.multiarray.scalar',
})


def load_checkpoint_file(filename: str,
                         map_location: Any = None,
                         allow_unsafe: Optional[bool] = None) -> Any:
    """Load a checkpoint file, with ``weights_only=True`` where possible.

    A file of tensors and plain containers (our exported and quantized
    checkpoints, plain state dicts) loads with ``weights_only=True``. A file
    that needs other globals is fully unpickled only if they all belong to a
    Runner checkpoint (:data:`RUNNER_CHECKPOINT_GLOBALS`) and ``allow_unsafe``;
    a full unpickle can run code from the file, so load only checkpoints you
    trust.

    Args:
        filename: path of the file.
        map_location: as :func:`torch.load`.
        allow_unsafe: allow the full unpickle of Runner checkpoints. Defaults
            to True unless the environment sets ``FSNET_WEIGHTS_ONLY=1``.

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
        return torch.load(filename, map_location=map_location,
                          weights_only=True)
    except pickle.UnpicklingError as err:
        if 'Unsupported global' not in str(err):
            raise _unreadable(filename, err) from err
    except (RuntimeError, EOFError, OSError, ValueError) as err:
        raise _unreadable(filename, err) from err

    unsafe = set(torch.serialization.get_unsafe_globals_in_checkpoint(filename))
    foreign = sorted(unsafe - RUNNER_CHECKPOINT_GLOBALS)
    if foreign:
        raise RuntimeError(
            f'{filename}: refusing to unpickle: it references {foreign}, which '
            f'no MMEngine Runner checkpoint holds (only tensors, plain '
            f'containers and {sorted(RUNNER_CHECKPOINT_GLOBALS)} are loaded)')
    if not allow_unsafe:
        raise RuntimeError(
            f'{filename}: a Runner checkpoint needs a full unpickle '
            f'({sorted(unsafe)}), which FSNET_WEIGHTS_ONLY=1 forbids')
    warnings.warn(
        f'{filename}: loading an MMEngine Runner checkpoint with a full '
        f'unpickle (torch.load weights_only=False), which can run code from '
        f'the file: load only checkpoints you trust; FSNET_WEIGHTS_ONLY=1 '
        f'refuses.')
    try:
        return torch.load(filename, map_location=map_location,
                          weights_only=False)
    except Exception as err:  # noqa: BLE001  any failure means unreadable
        raise _unreadable(filename, err) from err


def _unreadable(filename: str, err: BaseException) -> RuntimeError:
    detail = [line for line in str(err).splitlines() if line.strip()]
    return RuntimeError(f'{filename}: truncated, corrupted or not a torch '
                        f'checkpoint ({type(err).__name__}: '
                        f'{detail[-1] if detail else ""})')


def read_checkpoint(checkpoint: str) -> Tuple[dict, dict]:
    """The state dict and metadata of a (float or compressed) checkpoint file.

    Raises:
        ValueError: the file holds no state dict (names the file).
        RuntimeError: the file is unreadable (names the file).
    """
    ckpt = load_checkpoint_file(checkpoint, map_location='cpu')
    if is_compressed(ckpt):
        ckpt = decompress(ckpt, checkpoint)
    state_dict = ckpt.get('state_dict', ckpt) if isinstance(ckpt, dict) else None
    if not isinstance(state_dict, dict):
        raise ValueError(f'{checkpoint}: holds no state dict')
    return state_dict, ckpt.get('meta', {}) or {}


def load_into(model: nn.Module, checkpoint: str) -> dict:
    """Load a (float or compressed) checkpoint into a model, strictly.

    Returns:
        The checkpoint's metadata.

    Raises:
        ValueError: the checkpoint does not fit the model (names the file
            and the first mismatching entry).
        RuntimeError: the file is unreadable (names the file).
    """
    state_dict, meta = read_checkpoint(checkpoint)
    check_state_dict(model, state_dict, checkpoint)
    model.load_state_dict(state_dict)
    model.eval()
    return meta
