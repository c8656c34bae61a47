"""FS from a trained dense model: least-squares conversion, then fine-tuning, measured.

On the accuracy benchmark's data and recipe (``bench_accuracy.py``), per seed:

1. train the dense SSD300-BN at the demo width (``dense-w0.25``) and test it;
2. ``tools/convert.py``: the FS model's summaries by least squares from it
   (FS K3 x 1 with ``pred_interleave``, the configs' default), test as is;
3. fine-tune that FS model with the same recipe and iterations
   (``load_from``), test again, and WQ-test it.

Prints and writes (``--docs``) the mAP after each step, next to the FS model
trained from scratch for the same iterations (from ``bench_accuracy.py``'s
runs, if present in its work dir).

    python benchmarks/bench_from_dense.py --iters 250 --seeds 0
"""
import argparse
import json
import os
import statistics
import sys
import time
from typing import List, Optional

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from bench_accuracy import VARIANTS, config_text, write_config  # noqa: E402
from fsnet_mmdet.tools.pipeline import (last_checkpoint, map_of,  # noqa: E402
                                        run_tool, write_json_atomic)

DENSE, FS = 'dense-w0.25', 'fs-k3x1-interleave'


def run_seed(seed: int, iters: int, work: str, data_root: str) -> dict:
    """The four mAPs of one seed (resumes: a finished seed is read back)."""
    run = os.path.join(work, f'seed{seed}')
    result_path = os.path.join(run, 'result.json')
    if os.path.exists(result_path):
        return json.load(open(result_path))
    start, log = time.time(), os.path.join(run, 'log.txt')

    def tool(*args):
        run_tool(*args, log=log, what=f'bench_from_dense seed {seed}')

    def test(config, checkpoint, name):
        tool('tools/test.py', config, checkpoint, '--work-dir',
             os.path.join(run, name))
        return map_of(os.path.join(run, name))

    dense_cfg = write_config(os.path.join(run, 'dense.py'), config_text(
        VARIANTS[DENSE], seed, iters, data_root))
    fs_cfg = write_config(os.path.join(run, 'fs.py'), config_text(
        VARIANTS[FS], seed, iters, data_root))
    wq_cfg = write_config(os.path.join(run, 'fs_wq.py'), config_text(
        VARIANTS[FS], seed, iters, data_root, wq=True))
    tool('tools/train.py', dense_cfg, '--work-dir', os.path.join(run, 'dense'))
    dense_ckpt = last_checkpoint(os.path.join(run, 'dense'))
    result = dict(seed=seed, iters=iters,
                  dense=test(dense_cfg, dense_ckpt, 'test_dense'))
    converted = os.path.join(run, 'fs_init.pth')
    tool('tools/convert.py', fs_cfg, dense_ckpt, converted)
    result['converted'] = test(fs_cfg, converted, 'test_converted')
    tool('tools/train.py', fs_cfg, '--work-dir', os.path.join(run, 'finetune'),
         '--cfg-options', f'load_from={converted}')
    tuned = last_checkpoint(os.path.join(run, 'finetune'))
    result['finetuned'] = test(fs_cfg, tuned, 'test_finetuned')
    result['finetuned_wq'] = test(wq_cfg, tuned, 'test_finetuned_wq')
    for path in (dense_ckpt, converted, tuned):
        os.remove(path)
    result['wall_s'] = time.time() - start
    write_json_atomic(result_path, result)
    return result


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--seeds', nargs='+', type=int, default=[0])
    parser.add_argument('--iters', type=int, default=250)
    parser.add_argument('--data-root', default='data/demo/VOCdevkit')
    parser.add_argument('--docs', default=None,
                        help='default: docs/accuracy/from-dense-iters<N>')
    args = parser.parse_args(argv)

    from fsnet_mmdet.datasets.synthetic_voc import SyntheticVOCSpec, ensure_dataset

    start = time.time()
    work = os.path.join(ROOT, 'work_dirs', 'bench_from_dense', f'iters{args.iters}')
    docs = args.docs or os.path.join(ROOT, 'docs', 'accuracy',
                                     f'from-dense-iters{args.iters}')
    data_root = os.path.abspath(args.data_root)
    ensure_dataset(data_root, SyntheticVOCSpec())
    results = []
    for i, seed in enumerate(args.seeds, 1):
        print(f'[{i}/{len(args.seeds)}] seed {seed}', flush=True)
        results.append(run_seed(seed, args.iters, work, data_root))
    scratch = []
    for seed in args.seeds:
        path = os.path.join(ROOT, 'work_dirs', 'bench_accuracy',
                            f'iters{args.iters}', FS, f'seed{seed}', 'result.json')
        if os.path.exists(path):
            scratch.append(json.load(open(path))['mAP'])

    def cell(values):
        return (f'{statistics.mean(values):.3f} ('
                + ', '.join(f'{v:.3f}' for v in values) + ')')

    rows = [(f'dense width 0.25, {args.iters} iterations', 'dense'),
            ('FS K3 x 1 pred_interleave, converted by least squares', 'converted'),
            (f'... then fine-tuned {args.iters} iterations', 'finetuned'),
            ('... fine-tuned, WQ', 'finetuned_wq')]
    lines = ['| model | mAP@0.5, mean (per seed) |', '|---|---|']
    lines += [f'| {label} | {cell([r[key] for r in results])} |'
              for label, key in rows]
    if scratch:
        lines.append(f'| FS K3 x 1 pred_interleave from scratch, {args.iters} '
                     f'iterations (bench_accuracy) | {cell(scratch)} |')
    command = 'python benchmarks/bench_from_dense.py ' + ' '.join(
        argv if argv is not None else sys.argv[1:])
    text = ('\n'.join(lines) + f'\n\nCommand: `{command.strip()}`; seeds '
            f'{args.seeds}; {sum(r["wall_s"] for r in results) / 60:.0f} min '
            f'of wall time in all.\n')
    os.makedirs(docs, exist_ok=True)
    with open(os.path.join(docs, 'results.md'), 'w') as f:
        f.write(text)
    with open(os.path.join(docs, 'results.json'), 'w') as f:
        json.dump(dict(command=command.strip(), runs=results,
                       scratch=scratch), f, indent=1)
    print('\n' + text + f'bench_from_dense: wall time '
          f'{(time.time() - start) / 60:.1f} min')


if __name__ == '__main__':
    main()
