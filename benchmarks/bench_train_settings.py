"""What CPU settings are worth for the demo's training iteration, side by side.

Builds the demo's models (SSD300-BN width 0.25, dense and FS K3 x 1, as
``bench_ssd300.py --widen 0.25``) and times, interleaved in one process, one
training iteration (forward + loss + backward + AdamW step, batch 8 of
300 x 300) under each setting, each on its own copy of the same initial model:

- ``fp32``: what ``make demo`` runs;
- ``channels_last``: model and images in NHWC memory format;
- ``bf16``: ``torch.autocast('cpu', dtype=torch.bfloat16)`` around the
  forward and loss (what ``BF16OptimWrapper`` does);
- ``bf16 + channels_last``: both;
- ``1 thread``: ``torch.set_num_threads(1)`` (the data worker keeps the other
  core).

Prints the median seconds per iteration of each setting and its ratio to
``fp32``; the loss after the timed iterations shows whether a setting trains
the same (bf16 rounds).

    python benchmarks/bench_train_settings.py [--reps 5] [--models fs dense]
"""
import argparse
import copy
import os
import sys
from typing import Callable, Dict

import torch

sys.path.insert(0, os.path.dirname(__file__))
from bench_ssd300 import build, synthetic_batch  # noqa: E402
from timing import interleaved, med, spread  # noqa: E402

SETTINGS = ('fp32', 'channels_last', 'bf16', 'bf16 + channels_last', '1 thread')


def step_fn(model, setting: str, inputs, samples, losses: Dict[str, float]
            ) -> Callable[[], None]:
    """One training iteration of ``model`` under ``setting``."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4)
    if 'channels_last' in setting:
        model.to(memory_format=torch.channels_last)
        inputs = inputs.contiguous(memory_format=torch.channels_last)
    threads = torch.get_num_threads()

    def run():
        if setting == '1 thread':
            torch.set_num_threads(1)
        model.train()
        with torch.autocast('cpu', dtype=torch.bfloat16,
                            enabled='bf16' in setting):
            loss, _ = model.parse_losses(model.loss(inputs, samples))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        torch.set_num_threads(threads)
        losses[setting] = loss.item()
    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--reps', type=int, default=5)
    parser.add_argument('--batch', type=int, default=8)
    parser.add_argument('--models', nargs='+', default=['fs', 'dense'],
                        choices=['fs', 'dense'])
    args = parser.parse_args()
    print(f'torch {torch.__version__}, {torch.get_num_threads()} threads, '
          f'batch {args.batch}, {args.reps} interleaved repetitions')
    inputs, samples = synthetic_batch(args.batch, 'cpu')
    for name in args.models:
        base = build(name, 'cpu', widen=0.25)
        losses: Dict[str, float] = {}
        fns = {s: step_fn(copy.deepcopy(base), s, inputs, samples, losses)
               for s in SETTINGS}
        times = interleaved(fns, args.reps)
        ref = med(times['fp32'])
        print(f'\n{name} (width 0.25): s / iteration, ratio to fp32, spread, '
              f'loss after {args.reps + 1} iterations')
        for s in SETTINGS:
            print(f'  {s:21s} {med(times[s]):.3f} s  {med(times[s]) / ref:5.2f}x'
                  f'  spread {spread(times[s]):.2f}  loss {losses[s]:.3f}')


if __name__ == '__main__':
    main()
