"""Helpers below every family: atomic file writes (:mod:`.io`) and the
wrapping of third-party functions (:mod:`.patching`)."""
from .io import (atomic_path, check_output_path, save_atomic,
                 write_json_atomic, write_text_atomic)

__all__ = ['atomic_path', 'check_output_path', 'save_atomic',
           'write_json_atomic', 'write_text_atomic']
