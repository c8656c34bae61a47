"""The model-config keys ``fs_convert`` and ``compression``: MMEngine's and
MMDetection's model registries build the model a config describes, then
convert it to FS (:func:`~fsnet_mmdet.conversion.convert_to_fs`) or compress
it (:func:`~fsnet_mmdet.compression.apply_compression`)."""
from ..compression.structure import (COMPRESSION_KEY, apply_compression,
                                     check_spec)
from ..conversion.modules import FS_CONVERT_KEY, convert_to_fs
from ..utils.patching import wrap_attribute


def build_with_fs_convert(original):
    """A registry ``build_func`` that applies a model config's ``fs_convert``."""
    def build(cfg, *args, **kwargs):
        if not isinstance(cfg, dict) or FS_CONVERT_KEY not in cfg:
            return original(cfg, *args, **kwargs)
        cfg = cfg.copy()
        options = cfg.pop(FS_CONVERT_KEY)
        model = original(cfg, *args, **kwargs)
        try:
            report = convert_to_fs(model, **dict(options))
        except TypeError as err:  # an unknown key of the fs_convert dict
            raise ValueError(
                f'{FS_CONVERT_KEY}: {err}; allowed keys: include, exclude, '
                f'conv, linear, rules, predictor_order') from None
        from mmengine.logging import print_log
        print_log(report.summary(), logger='current')
        return model
    return build


def build_with_compression(original):
    """A registry ``build_func`` that applies a model config's ``compression``."""
    def build(cfg, *args, **kwargs):
        if not isinstance(cfg, dict) or COMPRESSION_KEY not in cfg:
            return original(cfg, *args, **kwargs)
        cfg = cfg.copy()
        spec = cfg.pop(COMPRESSION_KEY)
        check_spec(spec)
        model = original(cfg, *args, **kwargs)
        return apply_compression(model, spec)
    return build


def install_build_hooks() -> None:
    """Make MMEngine's and MMDetection's model registries honour
    ``fs_convert`` and ``compression`` (once; idempotent)."""
    from mmdet.registry import MODELS as MMDET_MODELS
    from mmengine.registry import MODELS

    for registry in (MODELS, MMDET_MODELS):
        wrap_attribute(registry, 'build_func', build_with_fs_convert)
        wrap_attribute(registry, 'build_func', build_with_compression)
