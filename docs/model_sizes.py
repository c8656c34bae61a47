"""Parameters and checkpoint bytes of the VOC SSD300 configs (docs/model_sizes.json).

The README's full-scale results table reads its parameter counts and
checkpoint bytes from the file this script writes (``tests/docs/test_docs.py``
checks the table against it). For every VOC SSD300 config: the model's
parameters (``count_params``: stored, dense-equivalent and the WQ effective
count, as ``tools/count_params.py`` prints them), and the bytes of its
checkpoint measured the way ``benchmarks/bench_ssd300.py`` measures them (its
``checkpoint_bytes``: the fp32 state dict, or for a WQ config the compressed
file ``tools/quantize.py`` writes, without training metadata). Bytes do not
depend on the weights' values, so untrained models give the trained sizes.

    python docs/model_sizes.py        # about half a minute on 2 CPU cores
"""
import importlib.util
import os
import sys
from typing import Iterable, Optional

import torch

from fsnet_mmdet.utils.io import write_json_atomic

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, 'docs', 'model_sizes.json')
#: config -> (label as in the paper's Table 4, bench_ssd300 model name, WQ).
CONFIGS = {
    'configs/ssd300_bn_voc.py': ('SSD300-BN', 'dense', False),
    'configs/fsnet_ssd300_voc.py': ('FSNet-1', 'fsnet1', False),
    'configs/fsnet_ssd300_voc_wq.py': ('FSNet-1-WQ', 'fsnet1', True),
    'configs/fsnet2_ssd300_voc.py': ('FSNet-2', 'fsnet2', False),
    'configs/fsnet2_ssd300_voc_wq.py': ('FSNet-2-WQ', 'fsnet2', True),
}


def _bench_ssd300():
    """``benchmarks/bench_ssd300.py`` as a module (it is a script, not a package)."""
    path = os.path.join(ROOT, 'benchmarks', 'bench_ssd300.py')
    sys.path.insert(0, os.path.dirname(path))  # its ``timing`` import
    spec = importlib.util.spec_from_file_location('bench_ssd300', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def measure(configs: Optional[Iterable[str]] = None) -> dict:
    """Sizes of the configs of :data:`CONFIGS`.

    Args:
        configs: keys of :data:`CONFIGS` to measure (default: all).

    Returns:
        ``{'command', 'torch', 'models': {config: {label, params,
        dense_equivalent, effective, checkpoint, bytes}}}``; ``effective`` is
        the WQ effective count for a WQ config and the stored count otherwise.
    """
    from mmengine.logging import MMLogger

    import fsnet_mmdet  # noqa: F401  registers the FS models
    from fsnet_mmdet.layers.accounting import count_params
    from fsnet_mmdet.tools.count_params import build_model_from_config

    MMLogger.get_current_instance().setLevel('WARNING')
    bench = _bench_ssd300()
    out = {}
    for config in configs or CONFIGS:
        label, name, wq = CONFIGS[config]
        model = build_model_from_config(os.path.join(ROOT, config))
        report = count_params(model)
        # A WQ config's model has its FS config's state dict: the bytes of
        # the compressed file are those of the FS model's.
        size = bench.checkpoint_bytes({name: model})[
            f'{name} {"WQ" if wq else "fp32"}']
        out[config] = dict(
            label=label, params=report.stored, dense_equivalent=report.dense,
            effective=int(report.effective_wq) if wq else report.stored,
            checkpoint=('WQ compressed (uint8 summaries)' if wq
                        else 'fp32 state dict'),
            bytes=size)
    return dict(command='python docs/model_sizes.py', torch=torch.__version__,
                models=out)



def main() -> None:
    data = measure()
    write_json_atomic(OUT, data)
    for config, row in data['models'].items():
        print(f'{config:<34} {row["params"]:>12,} params  '
              f'{row["effective"]:>12,} effective  {row["bytes"]:>13,} bytes')
    print(f'wrote {OUT}')


if __name__ == '__main__':
    main()
