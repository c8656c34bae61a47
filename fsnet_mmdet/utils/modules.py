"""Editing a built model's module tree."""
from torch import nn


def replace_module(model: nn.Module, name: str, new: nn.Module) -> None:
    """Put ``new`` where the submodule ``name`` (dotted) of ``model`` is."""
    parent, _, child = name.rpartition('.')
    setattr(model.get_submodule(parent), child, new)
