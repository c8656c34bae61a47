"""Wrapping a third-party function or method in place, idempotently (the
compatibility fixes and the build hooks of ``fs_convert`` / ``compression``)."""
import functools
from typing import Any, Callable


def wrap_attribute(owner: Any, name: str,
                   wrapper_of: Callable[[Callable], Callable]) -> None:
    """Replace ``owner.name`` by ``wrapper_of(original)``, once per
    ``wrapper_of`` (idempotent; different wrappers stack)."""
    original = getattr(owner, name)
    flag = f'fsnet_patched_{wrapper_of.__module__}.{wrapper_of.__qualname__}'
    if getattr(original, flag, False):
        return
    wrapped = functools.wraps(original)(wrapper_of(original))
    setattr(wrapped, flag, True)  # functools.wraps carries earlier flags
    setattr(owner, name, wrapped)
