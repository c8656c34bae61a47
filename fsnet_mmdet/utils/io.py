"""Atomic file writes: a file is either complete or absent (or the previous
one), never half-written. The one writer of checkpoints, configs, results and
exported graphs in the package, its tools and benchmarks."""
import json
import os
import tempfile
from contextlib import contextmanager
from typing import Any, Iterator

import torch


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


def save_atomic(obj: Any, filename: str) -> int:
    """``torch.save`` ``obj`` to ``filename`` atomically.

    Returns:
        The size of the written file in bytes.
    """
    with atomic_path(filename) as tmp:
        torch.save(obj, tmp)
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
