"""ONNX export measured: file bytes, onnxruntime latency and session-load time.

For each model, three exports (``fsnet_mmdet.deploy.export_onnx``): the baked
dense graph (what ``tools/bake.py`` + ``torch.onnx.export`` give), the FS
graph (fp32 summaries) and the FS-WQ graph (8-bit summaries). Measured:

* file bytes, against the tensors each must hold: the dense weights; the
  summaries + other tensors; the WQ checkpoint's payload (``tools/quantize.py``'s
  file, written here too);
* onnxruntime latency (CPU, batch 1, 300 x 300, all graph optimizations),
  the three graphs timed side by side in one process, interleaved;
* session-load time (``InferenceSession`` creation, where onnxruntime
  inlines the weight functions and folds the weights), interleaved;
* the raw head outputs of each graph against the PyTorch model's (a check).

Models: the demo's trained FS model (``make demo`` writes
``work_dirs/demo/fsnet_fp32.pth``) and FSNet-1 at full width with random
weights (for size and speed; the weights' values do not change either).

    python benchmarks/bench_onnx.py                 # writes docs/deploy/bench_onnx.json
                                                    # and the table in docs/deploy.md
    python benchmarks/bench_onnx.py --quick         # a check that it runs: the demo's
        # model with random weights, one repetition, no timing reported, nothing
        # written under docs/
"""
import argparse
import datetime
import os
import platform
import sys
import tempfile
from typing import Dict, List, Optional

import torch

sys.path.insert(0, os.path.dirname(__file__))
from timing import interleaved, med, spread  # noqa: E402

import fsnet_mmdet  # noqa: E402,F401
from fsnet_mmdet.conversion import fs_layers  # noqa: E402
from fsnet_mmdet.deploy.onnx_export import (export_onnx, payload_bytes,  # noqa: E402
                                            require)
from fsnet_mmdet.layers.wq import compress_state_dict  # noqa: E402
from fsnet_mmdet.utils.io import save_atomic  # noqa: E402
from fsnet_mmdet.engine.checkpoint import load_into  # noqa: E402
from fsnet_mmdet.tools.count_params import build_model_from_config  # noqa: E402
from fsnet_mmdet.utils.io import write_json_atomic, write_text_atomic  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEMO_CONFIG = 'configs/demo/fsnet_ssd300_demo.py'
DEMO_CHECKPOINT = 'work_dirs/demo/fsnet_fp32.pth'
FULL_CONFIG = 'configs/fsnet_ssd300_voc.py'
MODES = ('baked', 'fs', 'wq', 'summary')
LABELS = {'baked': 'baked (dense)', 'fs': 'FS (fp32 summaries)',
          'wq': 'FS-WQ (8-bit summaries)',
          'summary': 'FS, computed from the summaries (--summary-compute)'}
TABLE_BEGIN = '<!-- bench_onnx:begin -->'
TABLE_END = '<!-- bench_onnx:end -->'
#: Targets of the issue: file / tensors, and FS latency / baked latency.
SIZE_TARGET, LATENCY_TARGET = 1.10, 1.05


def cpu_name() -> str:
    """The CPU's model name (Linux), or the machine type."""
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.startswith('model name'):
                    return line.split(':', 1)[1].strip()
    except OSError:
        pass
    return platform.machine() or 'unknown CPU'


def build(config: str, checkpoint: Optional[str]):
    """A config's model: the checkpoint's weights, or seeded random ones.

    Random: the config's init, then random BatchNorm parameters and
    statistics; with the init's (1, 0, 0, 1) every folded BN vector of a
    width would be equal, and the exporter stores equal tensors once,
    which would flatter the file size.
    """
    from mmengine.logging import MMLogger

    MMLogger.get_current_instance().setLevel('WARNING')
    torch.manual_seed(0)
    model = build_model_from_config(os.path.join(ROOT, config))
    if checkpoint:
        load_into(model, checkpoint)
        return model.eval()
    model.init_weights()
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5, generator=g)
                m.bias.normal_(0, 0.1, generator=g)
                m.running_mean.normal_(0, 0.1, generator=g)
                m.running_var.uniform_(0.5, 2.0, generator=g)
    return model.eval()


def wq_checkpoint(model, directory: str) -> Dict[str, int]:
    """Bytes of the model's compressed WQ checkpoint file and of its tensors."""
    layers = fs_layers(model)
    ckpt = compress_state_dict(model.state_dict(),
                               [f'{n}.summary' for n in layers], {})
    size = save_atomic(ckpt, os.path.join(directory, 'wq.pth'))
    payload = sum(t.numel() * t.element_size()
                  for t in ckpt['packed']['data'].values())
    return dict(file=size, payload=payload)


def session(path: str, threads: int):
    ort = require('onnxruntime', 'bench_onnx.py')
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads
    return ort.InferenceSession(path, options, providers=['CPUExecutionProvider'])


def measure(name: str, config: str, checkpoint: Optional[str], args,
            directory: str) -> dict:
    """Export one model three ways and measure the files and sessions."""
    print(f'[{name}] {config} ({checkpoint or "random weights"})', flush=True)
    model = build(config, checkpoint)
    files = {mode: os.path.join(directory, f'{name}_{mode}.onnx')
             for mode in MODES}
    result = dict(config=config, checkpoint=checkpoint, files={})
    for mode in MODES:
        report = export_onnx(model, files[mode], mode=mode)
        held = payload_bytes(model, mode)
        result['files'][mode] = dict(bytes=report.bytes, tensors=held['total'])
    wq = wq_checkpoint(model, directory)
    result['wq_checkpoint'] = wq
    result['files']['wq']['tensors'] = wq['payload']  # the reference

    inputs = torch.randn(1, 3, 300, 300, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = [t for g in model._forward(inputs) for t in g]
    sessions = {mode: session(files[mode], args.threads) for mode in MODES}
    feed = {'inputs': inputs.numpy()}
    for mode, sess in sessions.items():
        outputs = sess.run(None, feed)
        reference = expected
        if mode == 'wq':
            from fsnet_mmdet.tools.export_onnx import reference_model
            with torch.no_grad():
                reference = [t for g in reference_model(model, 'wq')._forward(
                    inputs) for t in g]
        result['files'][mode]['max_abs_diff_vs_pytorch'] = max(
            float((torch.from_numpy(o) - r).abs().max())
            for o, r in zip(outputs, reference))

    latency = interleaved({m: (lambda s=s: s.run(None, feed))
                           for m, s in sessions.items()}, args.reps,
                          warmup=1 if args.quick else 3)
    loads = interleaved({m: (lambda f=files[m]: session(f, args.threads))
                         for m in MODES}, args.load_reps, warmup=0)
    for mode in MODES:
        entry = result['files'][mode]
        if args.quick:  # ran once to check the code; not a measurement
            entry.update(latency_ms=None, latency_spread=None, load_ms=None,
                         load_spread=None)
        else:
            entry.update(latency_ms=med(latency[mode]) * 1e3,
                         latency_spread=spread(latency[mode]),
                         load_ms=med(loads[mode]) * 1e3,
                         load_spread=spread(loads[mode]))
    return result


def markdown(results: Dict[str, dict], header: dict) -> str:
    """The README / docs table of the results."""
    def ms(value, spread_):
        return '-' if value is None else f'{value:.1f} (±{spread_:.0%})'

    timing = ('`--quick`: every graph run and loaded once to check the code; '
              'no time is reported' if header['quick'] else
              f'latency: batch 1, 300 x 300, median of {header["reps"]} '
              f'interleaved runs (spread); session load: median of '
              f'{header["load_reps"]}')
    lines = [
        f'Measured by `python benchmarks/bench_onnx.py` on {header["date"]}: '
        f'{header["machine"]}, onnxruntime {header["onnxruntime"]} '
        f'({header["threads"]} threads, all graph optimizations), torch '
        f'{header["torch"]}; {timing}.', '',
        '| model | graph | file bytes | baked / this | tensors it holds, bytes '
        '| file / tensors | latency, ms | / baked | session load, ms |',
        '|---|---|---|---|---|---|---|---|---|']
    for name, result in results.items():
        files = result['files']
        baked = files['baked']
        for mode in MODES:
            f = files[mode]
            ratio = ('-' if f['latency_ms'] is None else
                     f'{f["latency_ms"] / baked["latency_ms"]:.3f}')
            lines.append(
                f'| {name} | {LABELS[mode]} | {f["bytes"]:,} | '
                f'{baked["bytes"] / f["bytes"]:.1f}x | {f["tensors"]:,} | '
                f'{f["bytes"] / f["tensors"]:.3f} | '
                f'{ms(f["latency_ms"], f["latency_spread"])} | {ratio} | '
                f'{ms(f["load_ms"], f["load_spread"])} |')
    lines.append('')
    lines.append('Tensors it holds: baked, the dense weights and other '
                 'tensors; FS, the summaries and other tensors; FS-WQ, the '
                 'payload of the WQ checkpoint (`tools/quantize.py`; file '
                 + ', '.join(f'{r["wq_checkpoint"]["file"]:,} bytes for '
                             f'{n}' for n, r in results.items()) + ').')
    return '\n'.join(lines)


def targets(results: Dict[str, dict]) -> List[str]:
    """The issue's targets, each with its measured value and whether met."""
    rows = []
    for name, result in results.items():
        files = result['files']
        for mode in ('fs', 'wq'):
            value = files[mode]['bytes'] / files[mode]['tensors']
            rows.append(f'{name} {mode}: file / tensors {value:.3f} '
                        f'(target <= {SIZE_TARGET}): '
                        f'{"met" if value <= SIZE_TARGET else "MISSED"}')
        if files['fs']['latency_ms'] is not None:
            value = files['fs']['latency_ms'] / files['baked']['latency_ms']
            rows.append(f'{name} fs: latency / baked {value:.3f} (target <= '
                        f'{LATENCY_TARGET}): '
                        f'{"met" if value <= LATENCY_TARGET else "MISSED"}')
            value = files['summary']['latency_ms'] / files['baked']['latency_ms']
            rows.append(f'{name} summary: latency / baked {value:.3f} (no '
                        f'target; below 1 is faster than the dense graph)')
    return rows


def write_table(path: str, table: str) -> None:
    """Replace the block between the markers in ``path``, atomically."""
    with open(path) as f:
        text = f.read()
    if TABLE_BEGIN not in text or TABLE_END not in text:
        raise SystemExit(f'{path}: no {TABLE_BEGIN} ... {TABLE_END} block to '
                         f'write the table into')
    head, rest = text.split(TABLE_BEGIN, 1)
    _, tail = rest.split(TABLE_END, 1)
    write_text_atomic(path, f'{head}{TABLE_BEGIN}\n{table}\n{TABLE_END}{tail}')


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--demo-checkpoint', default=DEMO_CHECKPOINT,
                        help='the demo\'s trained FS checkpoint (default: '
                        f'{DEMO_CHECKPOINT}, written by make demo)')
    parser.add_argument('--demo-label', default='demo (trained)',
                        help='what the demo checkpoint is, for the table '
                        '(e.g. "demo (converted from the dense teacher)")')
    parser.add_argument('--demo-random', action='store_true',
                        help='the demo model with seeded random weights '
                        'instead of a checkpoint (bytes and latency do not '
                        'depend on the weights\' values)')
    parser.add_argument('--no-full', action='store_true',
                        help='skip FSNet-1 at full width')
    parser.add_argument('--reps', type=int, default=30,
                        help='latency repetitions per graph (default 30)')
    parser.add_argument('--load-reps', type=int, default=5,
                        help='session loads per graph (default 5)')
    parser.add_argument('--threads', type=int, default=torch.get_num_threads(),
                        help='onnxruntime intra-op threads (default: torch\'s)')
    parser.add_argument('--out-dir', default=os.path.join(ROOT, 'docs', 'deploy'),
                        help='where bench_onnx.json goes (default docs/deploy)')
    parser.add_argument('--docs', default=os.path.join(ROOT, 'docs', 'deploy.md'),
                        help='the file whose table block is rewritten')
    parser.add_argument('--quick', action='store_true',
                        help='check that it runs: the demo\'s model with random '
                        'weights, one repetition, no timing reported; json and '
                        'table go to a temporary folder, not docs/')
    args = parser.parse_args(argv)
    for name in ('reps', 'load_reps', 'threads'):
        if getattr(args, name) < 1:
            parser.error(f'--{name.replace("_", "-")} must be >= 1')
    ort = require('onnxruntime', 'bench_onnx.py')

    models = {}
    if args.quick:
        args.reps = args.load_reps = 1
        models['demo (random weights)'] = (DEMO_CONFIG, None)
        args.out_dir = tempfile.mkdtemp(prefix='bench_onnx_quick_')
        args.docs = None
    elif args.demo_random:
        models['demo (random weights)'] = (DEMO_CONFIG, None)
    else:
        checkpoint = os.path.join(ROOT, args.demo_checkpoint)
        if not os.path.isfile(checkpoint):
            raise SystemExit(f'{checkpoint}: no such file; run make demo (or '
                             f'python tools/demo.py) first, or give '
                             f'--demo-checkpoint')
        models[args.demo_label] = (DEMO_CONFIG, checkpoint)
    if not (args.quick or args.no_full):
        models['FSNet-1 (random weights)'] = (FULL_CONFIG, None)

    header = dict(
        date=datetime.date.today().isoformat(),
        machine=f'{cpu_name()}, {os.cpu_count()} cores',
        onnxruntime=ort.__version__, torch=torch.__version__,
        threads=args.threads, reps=args.reps, load_reps=args.load_reps,
        quick=args.quick)
    results = {}
    with tempfile.TemporaryDirectory() as directory:
        for name, (config, checkpoint) in models.items():
            results[name] = measure(name.split()[0], config, checkpoint, args,
                                    directory)
    table = markdown(results, header)
    print('\n' + table + '\n')
    for row in targets(results):
        print(row)
    os.makedirs(args.out_dir, exist_ok=True)
    out = os.path.join(args.out_dir, 'bench_onnx.json')
    write_json_atomic(out, dict(header=header, results=results,
                                targets=targets(results), table=table))
    print(f'\n{out} written')
    if args.docs:
        write_table(args.docs, table)
        print(f'{args.docs}: table written')


if __name__ == '__main__':
    main()
