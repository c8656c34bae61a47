"""Steps shared by the demo and the accuracy benchmark: run a tool, read its logs."""
import contextlib
import functools
import glob
import json
import os
import runpy
import select
import signal
import statistics
import subprocess
import sys
import threading
from typing import List, Optional, Tuple

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

#: What every tool imports (4 s of a tools/test.py run on 2 cores): the
#: tools start forked from a process that imported these once.
PRELOAD = ('fsnet_mmdet', 'fsnet_mmdet.tools', 'mmdet.apis', 'mmdet.engine',
           'mmdet.evaluation', 'mmengine.runner')


def _serve(requests_fd: int, results_fd: int) -> None:
    """The tool starter's loop (its own process): import :data:`PRELOAD`,
    then for each request line (JSON ``[script, args, stdout, stderr]``)
    fork a child that runs it, answer its pid, wait, answer its exit code.
    Ends when the request pipe closes."""
    import importlib
    for name in PRELOAD:
        importlib.import_module(name)
    results = os.fdopen(results_fd, 'w', buffering=1)
    for line in os.fdopen(requests_fd):
        script, args, stdout, stderr = json.loads(line)
        pid = os.fork()
        if pid == 0:
            os.close(results_fd)
            os._exit(_exec_script(script, args, stdout, stderr))
        results.write(f'{pid}\n')
        _, status = os.waitpid(pid, 0)
        results.write(f'{os.waitstatus_to_exitcode(status)}\n')


def _exec_script(script: str, args: List[str], stdout: Optional[str],
                 stderr: Optional[str]) -> int:
    """In the forked child: ``python <script> <args>`` as the interpreter
    would run it (``sys.argv``, ``sys.path[0]``, ``__main__``, exit code,
    exit handlers), stdout and stderr appended to the named files (None:
    the caller's)."""
    import atexit
    import traceback
    for path, fd in ((stdout, 1), (stderr, 2)):
        if path is not None:
            target = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            os.dup2(target, fd)
            os.close(target)
    sys.argv = [script, *args]
    sys.path[0] = os.path.dirname(os.path.abspath(script))
    try:  # its name in ps / top / pgrep (the command line stays the starter's)
        with open('/proc/self/comm', 'w') as comm:
            comm.write(os.path.basename(script)[:15])
    except OSError:
        pass
    code = 0
    try:
        runpy.run_path(script, run_name='__main__')
    except SystemExit as err:
        if isinstance(err.code, int) or err.code is None:
            code = err.code or 0
        else:
            print(err.code, file=sys.stderr)
            code = 1
    except BaseException:  # noqa: B902 - the interpreter's behaviour
        traceback.print_exc()
        code = 1
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    return code


class _ToolStarter:
    """A process that has imported the stack and forks every tool from it."""

    def __init__(self) -> None:
        requests_r, requests_w = os.pipe()
        results_r, results_w = os.pipe()
        self.process = subprocess.Popen(
            [sys.executable, '-c', 'from fsnet_mmdet.tools.pipeline import '
             f'_serve; _serve({requests_r}, {results_w})'],
            cwd=ROOT, stdin=subprocess.DEVNULL,
            pass_fds=(requests_r, results_w))
        os.close(requests_r)
        os.close(results_w)
        self.requests = os.fdopen(requests_w, 'w', buffering=1)
        self.results = os.fdopen(results_r)
        self.lock = threading.Lock()

    def run(self, script: str, args: List[str], stdout: Optional[str],
            stderr: Optional[str], timeout: Optional[float]) -> int:
        with self.lock:
            self.requests.write(json.dumps([script, args, stdout, stderr]) + '\n')
            pid = int(self._answer(None))
            try:
                return int(self._answer(timeout))
            except subprocess.TimeoutExpired:
                os.kill(pid, signal.SIGKILL)
                self._answer(None)
                raise subprocess.TimeoutExpired([script, *args], timeout)

    def _answer(self, timeout: Optional[float]) -> str:
        if not select.select([self.results], [], [], timeout)[0]:
            raise subprocess.TimeoutExpired('tool', timeout)
        line = self.results.readline()
        if not line:
            raise RuntimeError('the tool starter process ended')
        return line


@functools.lru_cache(maxsize=None)
def _tool_starter() -> Optional[_ToolStarter]:
    """The process's tool starter (started on first use); None without
    ``os.fork`` (not POSIX)."""
    return _ToolStarter() if hasattr(os, 'fork') else None


def run_script(script: str, *args, stdout: Optional[str] = None,
               stderr: Optional[str] = None,
               timeout: Optional[float] = None) -> int:
    """``python <script> <args>`` from the repository root; its exit code.

    The script runs in a fresh process forked from one that has imported
    the stack (:data:`PRELOAD`): a tool starts in a fraction of a second
    instead of ~4 s. That process is started on the first call, with this
    process's environment at that time. Without ``os.fork``, a subprocess.

    Args:
        script: path of the script, relative to the repository root.
        *args: its arguments.
        stdout, stderr: files its output is appended to (the same file for
            both is fine); None: this process's.
        timeout: seconds before it is killed.

    Raises:
        subprocess.TimeoutExpired: it ran past ``timeout`` (it is killed).
    """
    args = [str(a) for a in args]
    starter = _tool_starter()
    if starter is None:
        with contextlib.ExitStack() as files:
            out, err = (None if path is None else files.enter_context(
                open(path, 'a')) for path in (stdout, stderr))
            return subprocess.run([sys.executable, script, *args], cwd=ROOT,
                                  stdout=out, stderr=err,
                                  timeout=timeout).returncode
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    return starter.run(str(script), args, stdout, stderr, timeout)


def run_tool(*args: str, log: Optional[str] = None, what: str = 'step') -> None:
    """Run ``python <args>`` (e.g. ``tools/train.py ...``) from the repository
    root (:func:`run_script`).

    Args:
        *args: the script and its arguments.
        log: file that receives the tool's stdout and stderr (appended); None
            prints them.
        what: name of the caller, for the error message.

    Raises:
        SystemExit: the tool failed; names the command (and the log file).
    """
    command = ' '.join(map(str, args))
    if log is None:
        print('$ python', command, flush=True)
    else:
        with open(log, 'a') as f:
            f.write(f'$ python {command}\n')
    if run_script(*args, stdout=log, stderr=log) != 0:
        where = f' (output in {log})' if log else ''
        raise SystemExit(f'{what}: step failed: {command}{where}')


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
