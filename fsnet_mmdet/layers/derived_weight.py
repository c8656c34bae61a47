"""A ``weight`` computed from other parameters that initializers can still write.

FSConv / FSLinear (a summary and an index) and BSFConv (a binary bank, a
selection and scales) store no dense weight, yet MMEngine's ``init_cfg``
initializers, mmcv's ``ConvModule`` and ``nn.init.*_`` initialize a layer by
writing into ``layer.weight`` in place. :class:`DerivedWeightMixin` hands out
the dense weight as a detached tensor, remembers its version counter, and
when the tensor was written to, lets the layer absorb the write
(:meth:`~DerivedWeightMixin._absorb_weight`) the next time anything of the
layer is read: any parameter, buffer or ``weight`` (initializers read
``bias`` right after writing ``weight``), and before forward, ``state_dict``,
``load_state_dict`` and ``.to()``.
"""
from typing import Optional, Tuple

from torch import Tensor


class DerivedWeightMixin:
    """``weight``: a detached dense materialization; in-place writes absorbed.

    Mix in before the ``nn`` module whose ``weight`` parameter the layer
    deletes. Subclasses implement :meth:`_detached_weight` and
    :meth:`_absorb_weight`; their forward calls :meth:`_write_back` first.
    """

    _dense: Optional[Tuple[Tensor, int]] = None  # (tensor handed out, version)

    def _detached_weight(self) -> Tensor:
        """The dense weight from the layer's parameters, without autograd."""
        raise NotImplementedError

    def _absorb_weight(self, dense: Tensor) -> None:
        """Set the layer's parameters from a dense weight written in place."""
        raise NotImplementedError

    @property
    def weight(self) -> Tensor:
        """The dense weight, detached; in-place writes reach the layer."""
        self._write_back()
        dense = self._detached_weight()
        self._dense = (dense, dense._version)
        return dense

    def __getattr__(self, name: str):
        # nn.Module serves parameters, buffers and submodules from here: a
        # pending write to `weight` is applied first, so every reader sees it.
        if self.__dict__.get('_dense') is not None:
            self._write_back()
        return super().__getattr__(name)

    def _write_back(self) -> None:
        """Absorb an in-place write to the last ``weight`` handed out."""
        if self.__dict__.get('_dense') is None:
            return
        dense, version = self._dense
        self._dense = None
        if dense._version != version:
            self._absorb_weight(dense)

    def _apply(self, fn, recurse=True):
        self._write_back()
        return super()._apply(fn, recurse)

    def _save_to_state_dict(self, destination, prefix, keep_vars):
        self._write_back()
        super()._save_to_state_dict(destination, prefix, keep_vars)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict,
                              missing_keys, unexpected_keys, error_msgs):
        self._write_back()  # a pending init is overridden by what is loaded
        super()._load_from_state_dict(state_dict, prefix, local_metadata,
                                      strict, missing_keys, unexpected_keys,
                                      error_msgs)
