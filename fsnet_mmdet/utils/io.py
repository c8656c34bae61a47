"""Atomic file writes: a file is either complete or absent (or the previous
one), never half-written. The one writer of checkpoints, configs, results and
exported graphs in the package, its tools and benchmarks. And the tensor
packing that every compressed checkpoint format (WQ, int8, BSF) stores."""
import json
import math
import os
import tempfile
from contextlib import contextmanager
from typing import Any, Dict, Iterator, Mapping, Tuple

import torch
from torch import Tensor


def check_output_path(filename: str) -> None:
    """Fail early, creating nothing, where ``filename`` cannot be written.

    Raises:
        IsADirectoryError: ``filename`` is a directory.
        OSError: its nearest existing parent is not a directory, or not
            writable (the message names the file).
    """
    path = os.path.abspath(filename)
    if os.path.isdir(path):
        raise IsADirectoryError(f'{filename}: is a directory; give the file '
                                f'to write')
    parent = os.path.dirname(path)
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent) or not os.access(parent, os.W_OK | os.X_OK):
        raise OSError(f'{filename}: cannot write here ({parent} is not a '
                      f'writable directory)')


@contextmanager
def atomic_path(filename: str) -> Iterator[str]:
    """A temporary file beside ``filename``, renamed onto it on success.

    The caller writes the yielded path (any writer that takes a path). On any
    error the temporary file is removed and ``filename`` is left as it was.

    Raises:
        IsADirectoryError, OSError: the file cannot be written there (the
            message names it), raised before anything is created.
    """
    path = os.path.abspath(filename)
    directory = os.path.dirname(path)
    check_output_path(filename)
    try:
        os.makedirs(directory, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix='.' + os.path.basename(path) + '.',
                                   suffix='.tmp', dir=directory)
    except OSError as err:
        raise OSError(err.errno, f'{filename}: cannot write here '
                      f'({err.strerror or err})') from None
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    try:
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600
        yield tmp
        with open(tmp, 'rb') as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def save_figure_atomic(fig: Any, filename: str, **savefig_options) -> None:
    """``fig.savefig`` (matplotlib, PNG) to ``filename`` atomically, without
    the software tag (the file changes only when the picture does); closes
    the figure."""
    import matplotlib.pyplot as plt

    options = dict(format='png', metadata={'Software': None})
    options.update(savefig_options)
    try:
        with atomic_path(filename) as tmp:
            fig.savefig(tmp, **options)
    finally:
        plt.close(fig)


def save_atomic(obj: Any, filename: str) -> int:
    """``torch.save`` ``obj`` to ``filename`` atomically.

    Returns:
        The size of the written file in bytes.
    """
    with atomic_path(filename) as tmp:
        with open(tmp, 'wb') as f:
            torch.save(obj, f)
    return os.path.getsize(filename)


def write_text_atomic(path: str, text: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        with open(tmp, 'w') as f:
            f.write(text)


def write_json_atomic(path: str, obj: Any) -> None:
    """Write ``obj`` as indented JSON to ``path`` atomically (a result file
    is either complete or absent: what resuming benchmarks read)."""
    write_text_atomic(path, json.dumps(obj, indent=1) + '\n')


def has_format(checkpoint: Any, name: str) -> bool:
    """Whether a loaded checkpoint is one of the package's compressed formats
    (``checkpoint['meta']['format'] == name``): WQ, int8 or BSF."""
    return (isinstance(checkpoint, dict)
            and isinstance(checkpoint.get('meta'), dict)
            and checkpoint['meta'].get('format') == name)


def unpack_format(checkpoint: dict, version: int, what: str,
                  filename: str) -> Tuple[dict, Dict[str, Tensor]]:
    """The common start of reading a compressed checkpoint (WQ, int8, BSF).

    Args:
        checkpoint: a loaded checkpoint of the format (:func:`has_format`).
        version: the format version this package reads.
        what: the format's name in the error message (``'int8'``, ...).
        filename: the file it came from, for error messages.

    Returns:
        Its metadata without ``format`` and ``version`` (that of the ordinary
        checkpoint it stands for), and its ``packed`` tensors.

    Raises:
        ValueError: another version, or malformed packed tensors (names the
            file).
    """
    meta = checkpoint['meta']
    if meta.get('version') != version:
        raise ValueError(f'{filename}: {what} checkpoint version '
                         f'{meta.get("version")!r}, this fsnet_mmdet reads '
                         f'version {version}')
    plain = {k: v for k, v in meta.items() if k not in ('format', 'version')}
    return plain, unpack_tensors(checkpoint.get('packed'), filename)


def pack_tensors(tensors: Mapping[str, Tensor]) -> dict:
    """Concatenate tensors per dtype: ``{'data': {dtype: flat}, 'entries': [...]}``."""
    chunks: Dict[str, list] = {}
    entries = []
    for key, tensor in tensors.items():
        dtype = str(tensor.dtype).replace('torch.', '')
        group = chunks.setdefault(dtype, [])
        offset = sum(c.numel() for c in group)
        entries.append([key, dtype, list(tensor.shape), offset])
        group.append(tensor.detach().reshape(-1).cpu())
    return {'data': {d: torch.cat(c) for d, c in chunks.items()},
            'entries': entries}


def unpack_tensors(packed: dict, filename: str = '<checkpoint>') -> Dict[str, Tensor]:
    """Inverse of :func:`pack_tensors`; ValueError (naming the file and entry) if malformed."""
    tensors = {}
    try:
        data, entries = packed['data'], packed['entries']
        for key, dtype, shape, offset in entries:
            flat = data[dtype]
            numel = math.prod(shape)
            if offset < 0 or offset + numel > flat.numel():
                raise ValueError(f'entry {key!r} runs past its {dtype} data')
            tensors[key] = flat[offset:offset + numel].view(shape).clone()
    except (KeyError, TypeError, ValueError, RuntimeError) as err:
        raise ValueError(f'{filename}: malformed compressed checkpoint '
                         f'({type(err).__name__}: {err})') from err
    return tensors
