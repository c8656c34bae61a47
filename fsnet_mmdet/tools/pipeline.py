"""Steps shared by the demo and the accuracy benchmark: run a tool, read its logs."""
import glob
import json
import os
import statistics
import subprocess
import sys
from typing import List, Optional, Tuple

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def run_tool(*args: str, log: Optional[str] = None, what: str = 'step') -> None:
    """Run ``python <args>`` (e.g. ``tools/train.py ...``) from the repository root.

    Args:
        *args: the script and its arguments.
        log: file that receives the tool's stdout and stderr (appended); None
            prints them.
        what: name of the caller, for the error message.

    Raises:
        SystemExit: the tool failed; names the command (and the log file).
    """
    cmd = [sys.executable, *map(str, args)]
    if log is None:
        print('$', ' '.join(cmd), flush=True)
        code = subprocess.run(cmd, cwd=ROOT).returncode
    else:
        with open(log, 'a') as f:
            f.write('$ ' + ' '.join(cmd) + '\n')
            f.flush()
            code = subprocess.run(cmd, cwd=ROOT, stdout=f,
                                  stderr=subprocess.STDOUT).returncode
    if code != 0:
        where = f' (output in {log})' if log else ''
        raise SystemExit(f'{what}: step failed: {" ".join(map(str, args))}{where}')


def map_of(work_dir: str) -> float:
    """VOC mAP from the newest metrics json that ``tools/test.py`` wrote in ``work_dir``."""
    for path in reversed(sorted(glob.glob(os.path.join(work_dir, '*', '*.json')))):
        with open(path) as f:
            for line in f:
                record = json.loads(line)
                if 'pascal_voc/mAP' in record:
                    return float(record['pascal_voc/mAP'])
    raise SystemExit(f'no pascal_voc/mAP in {work_dir}')


def training_records(train_dir: str) -> List[dict]:
    """The training log records (``vis_data/scalars.json``) of a work dir, in order."""
    records = []
    for path in sorted(glob.glob(os.path.join(train_dir, '*', 'vis_data',
                                              'scalars.json'))):
        with open(path) as f:
            records += [r for r in map(json.loads, f) if 'loss' in r]
    return records


def seconds_per_iteration(train_dir: str) -> Optional[float]:
    """Median training iteration time from the log (first record, the warm-up, dropped)."""
    times = [r['time'] for r in training_records(train_dir) if 'time' in r]
    times = times[1:] if len(times) > 1 else times
    return statistics.median(times) if times else None



def last_checkpoint(train_dir: str) -> str:
    """The checkpoint the Runner wrote last (its ``last_checkpoint`` file)."""
    with open(os.path.join(train_dir, 'last_checkpoint')) as f:
        return f.read().strip()


def train_resumable(config: str, train_dir: str, *options: str,
                    log: Optional[str] = None, what: str = 'step') -> str:
    """``tools/train.py config --work-dir train_dir [options]``, resuming
    the run an interruption left there; returns its last checkpoint."""
    resume = ['--resume'] if os.path.exists(
        os.path.join(train_dir, 'last_checkpoint')) else []
    run_tool('tools/train.py', config, '--work-dir', train_dir, *resume,
             *options, log=log, what=what)
    return last_checkpoint(train_dir)


def quantize_and_test(config: str, wq_config: str, checkpoint: str,
                      run_dir: str, log: Optional[str] = None,
                      what: str = 'step') -> Tuple[float, int]:
    """FS-WQ of a trained run: ``tools/quantize.py`` writes
    ``run_dir/weights_wq.pth`` from ``checkpoint``, ``tools/test.py`` tests it
    with ``wq_config`` (the run's config with ``wq=True``) in
    ``run_dir/test_wq``.

    Returns:
        (its mAP, the compressed checkpoint's bytes).
    """
    wq_path = os.path.join(run_dir, 'weights_wq.pth')
    run_tool('tools/quantize.py', config, checkpoint, wq_path, log=log,
             what=what)
    wq_dir = os.path.join(run_dir, 'test_wq')
    run_tool('tools/test.py', wq_config, wq_path, '--work-dir', wq_dir,
             log=log, what=what)
    return map_of(wq_dir), os.path.getsize(wq_path)


def schedule_text(seed: int, iters: int, warmup: int, start_factor: float,
                  eta_min: float, data_root: Optional[str] = None) -> str:
    """Config lines of a generated benchmark run: its seed, an ``iters``-long
    schedule (no validation while training; linear warm-up over ``warmup``
    iterations from ``start_factor``, then cosine to ``eta_min``), a log
    interval and one checkpoint at the end; with ``data_root``, every
    dataloader reads it."""
    text = f"""randomness = dict(seed={seed})
train_cfg = dict(max_iters={iters}, val_interval={iters + 1})
param_scheduler = [
    dict(type='LinearLR', start_factor={start_factor!r},
         by_epoch=False, begin=0, end={warmup}),
    dict(type='CosineAnnealingLR', by_epoch=False, begin={warmup}, end={iters},
         eta_min={eta_min!r}),
]
default_hooks = dict(logger=dict(interval={max(1, min(25, iters // 4))}),
                     checkpoint=dict(interval={iters}))
"""
    if data_root is not None:
        root = data_root.rstrip('/') + '/'
        text += f"""train_dataloader = dict(dataset=dict(dataset=dict(data_root={root!r})))
val_dataloader = dict(dataset=dict(data_root={root!r}))
test_dataloader = val_dataloader
"""
    return text
