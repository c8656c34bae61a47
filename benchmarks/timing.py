"""Interleaved timing shared by the benchmarks."""
import statistics
import time
from typing import Callable, Dict, List

import torch


def sync(device: str) -> None:
    if device.startswith('cuda'):
        torch.cuda.synchronize()


def interleaved(fns: Dict[str, Callable[[], object]], reps: int, warmup: int = 1,
                device: str = 'cpu') -> Dict[str, List[float]]:
    """Time each function ``reps`` times, alternating between them (seconds)."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    sync(device)
    times: Dict[str, List[float]] = {name: [] for name in fns}
    for _ in range(reps):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            sync(device)
            times[name].append(time.perf_counter() - start)
    return times


def med(values: List[float]) -> float:
    return statistics.median(values)


def spread(values: List[float]) -> float:
    """(max - min) / median, the relative spread of the repetitions."""
    return (max(values) - min(values)) / statistics.median(values)
