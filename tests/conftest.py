"""Shared helpers: repository paths, configs and real VOC batches; the
``e2e`` marker; one thread per pytest-xdist worker."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

if os.environ.get('PYTEST_XDIST_WORKER'):
    # ``make test`` runs one worker per core: one thread each (inherited by
    # the tools the tests start), not two workers of two threads on 2 cores.
    os.environ.setdefault('OMP_NUM_THREADS', '1')
    os.environ.setdefault('MKL_NUM_THREADS', '1')


def pytest_configure(config):
    if os.environ.get('PYTEST_XDIST_WORKER'):
        import torch
        torch.set_num_threads(1)
    config.addinivalue_line(
        'markers', 'e2e: trains a model or runs a tool end to end (in a '
        'subprocess); `pytest -m "not e2e"` runs the unit tests only')


def pytest_collection_modifyitems(config, items):
    """Files by their end-to-end tests' estimated seconds (``e2e(seconds=)``,
    the slowest ones' ``--durations``), longest first, then the other files
    with end-to-end tests, then the rest; the order inside a file is kept.
    ``make test`` runs whole files per xdist worker (``--dist loadfile``:
    module fixtures are built once) in this order (``--no-loadscope-reorder``;
    xdist would otherwise put the files with the most tests first), so the
    longest start first and the two workers finish together."""
    cost = {}
    for item in items:
        mark = item.get_closest_marker('e2e')
        if mark is not None:
            cost[item.fspath] = cost.get(item.fspath, 0) + mark.kwargs.get(
                'seconds', 1)
    items.sort(key=lambda item: -cost.get(item.fspath, 0))

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the benchmarks package, not tests/benchmarks/
VOC_ROOT = ROOT / 'tests' / 'data' / 'VOCdevkit'
TINY_CONFIG = ROOT / 'tests' / 'configs' / 'fsnet_ssd300_tiny.py'
TINY_WQ_CONFIG = ROOT / 'tests' / 'configs' / 'fsnet_ssd300_wq_tiny.py'


def load_config(path, **options):
    """Config.fromfile + ``--cfg-options``-style overrides."""
    from mmengine.config import Config
    from mmengine.hub import get_config

    path = str(path)
    cfg = get_config(path) if '::' in path else Config.fromfile(path)
    if options:
        cfg.merge_from_dict(options)
    return cfg


def build_detector(cfg):
    """Build ``cfg.model`` in the mmdet scope and run its init_weights."""
    from mmengine.registry import init_default_scope
    from mmdet.registry import MODELS

    init_default_scope('mmdet')
    model = MODELS.build(cfg.model)
    model.init_weights()
    return model


def voc_batch(pipeline):
    """One image from each of VOC2007 and VOC2012 through ``pipeline``."""
    from mmengine.dataset import pseudo_collate
    from mmdet.datasets import VOCDataset

    samples = []
    for year in ('VOC2007', 'VOC2012'):
        dataset = VOCDataset(
            data_root=str(VOC_ROOT),
            ann_file=f'{year}/ImageSets/Main/trainval.txt',
            data_prefix=dict(sub_data_root=f'{year}/'),
            pipeline=pipeline)
        samples.append(dataset[0])
    return pseudo_collate(samples)


def load_script(relpath: str):
    """A repository script (``docs/architecture.py``, ...) as a module."""
    import importlib.util

    path = ROOT / relpath
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_tool(*args, timeout=600, env=None):
    """``python <args>`` (a tool or a benchmark script) from the repository
    root, as a new process; the result with its stdout and stderr.

    Started by :func:`fsnet_mmdet.tools.pipeline.run_script` (forked from a
    process that has imported the stack, 4 s less per tool than a fresh
    interpreter; the same exit code and output); with ``env`` (variables
    added to the environment), a fresh interpreter that reads them at
    start."""
    import tempfile
    from fsnet_mmdet.tools.pipeline import run_script

    if env:
        return subprocess.run([sys.executable, *map(str, args)], cwd=ROOT,
                              capture_output=True, text=True, timeout=timeout,
                              env=dict(os.environ, **env))

    with tempfile.TemporaryDirectory() as tmp:
        out, err = os.path.join(tmp, 'stdout'), os.path.join(tmp, 'stderr')
        code = run_script(*args, stdout=out, stderr=err, timeout=timeout)
        texts = [open(path).read() if os.path.exists(path) else ''
                 for path in (out, err)]
    return subprocess.CompletedProcess([sys.executable, *map(str, args)],
                                       code, *texts)


@pytest.fixture(autouse=True)
def _seed():
    import torch
    torch.manual_seed(0)


@pytest.fixture(scope='session')
def trained(tmp_path_factory):
    """Train the tiny FSNet-1 config 2 epochs (1 iteration each) with tools/train.py."""
    work_dir = tmp_path_factory.mktemp('train')
    result = run_tool('tools/train.py', TINY_CONFIG, '--work-dir', work_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (work_dir / 'epoch_2.pth').is_file()
    return work_dir
