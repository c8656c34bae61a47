"""KSE's batched k-means against scikit-learn's KMeans, on the shapes KSE meets.

``fsnet_mmdet.compression.kse.kmeans`` clusters B sets of P points (an input
channel's N kernels of kh*kw values) into q centroids at once: k-means++
seeds, Lloyd iterations, ``inits`` restarts side by side, the lowest inertia
kept. scikit-learn's ``KMeans`` does one set per call, so its user loops over
the B sets. This script answers whether the library should replace ours.

The shapes are those of real compressions: each model below is built (its
init weights, or ``--checkpoint``'s for the demo model) and compressed the
way ``tools/compress.py --method kse --target ...`` does
(``fsnet_mmdet.tools.compress.compress_kse``), with ``kse.kmeans`` replaced
by a recorder that notes every call's (B, P, D, q, inits, max_iter) and
returns placeholders (so collecting costs no clustering):

* ``tiny``: the tiny dense SSD300-BN of ``tests/compression/test_kse.py``
  (``TINY_DENSE`` with its ``SMALL`` options), target ``4x`` as that test;
* ``demo``: the demo-width dense SSD300-BN (``configs/demo/ssd300_bn_demo.py``,
  width 0.25, the accuracy benchmark's ``dense-w0.25``), target 230026
  (FS K3 x 1's parameters, docs/compression-methods.md).

Each distinct shape is then timed on random-normal float32 points of that
shape (one seed), interleaved: ours (one batched call; it works in float64
inside) and ``KMeans(n_clusters=q, init='k-means++', n_init=inits,
max_iter=max_iter, random_state=seed, algorithm='lloyd', tol=--tol)`` fitted
once per set (on float32 it computes in float32). The table gives the
medians, sklearn / ours, and both mean inertias (per set, the sum of squared
distances of its points to their assigned centroid, one numpy formula in
float64 for both); each model's last line weights every shape by its number
of calls: the k-means time of a whole-model compression.

    python benchmarks/bench_kmeans.py [--reps 5] [--seed 0] [--tol 1e-4]
        [--models tiny demo] [--checkpoint DEMO_DENSE.pth]
    python benchmarks/bench_kmeans.py --quick   # two small shapes (q >= 2), 2 reps
    python benchmarks/bench_kmeans.py --list    # the shapes only (no sklearn)

Needs scikit-learn (``pip install scikit-learn``), which the package does
not depend on. Run it with ``OMP_NUM_THREADS`` set as you want both sides to
use threads (sklearn's Lloyd is OpenMP-parallel; ours uses torch's threads).
"""
import argparse
import logging
import os
import sys
from collections import Counter
from typing import Callable, Dict, List, NamedTuple, Optional, Sequence, Tuple
from unittest import mock

import numpy as np
import torch
from mmengine.logging import MMLogger

sys.path.insert(0, os.path.dirname(__file__))
from timing import interleaved, med  # noqa: E402

from fsnet_mmdet.compression import kse  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SKLEARN_MISSING = ('bench_kmeans.py compares with scikit-learn, which is not '
                   'installed (and not a dependency of fsnet_mmdet): '
                   'pip install scikit-learn')

#: The tiny dense SSD300-BN at width 1/16 (tests/compression/test_kse.py's
#: TINY_DENSE with its SMALL --cfg-options).
TINY_WIDTHS = [32, 64, 32, 16, 16, 16]
TINY_OPTIONS = {'model.backbone.widen_factor': 0.0625,
                'model.neck.in_channels': TINY_WIDTHS[:2],
                'model.neck.out_channels': TINY_WIDTHS,
                'model.bbox_head.in_channels': TINY_WIDTHS}


class ModelSpec(NamedTuple):
    """A dense model to compress: config, --cfg-options, --target."""

    config: str
    options: Optional[dict]
    target: str


MODELS: Dict[str, ModelSpec] = {
    'tiny': ModelSpec('tests/configs/ssd300_bn_tiny.py', TINY_OPTIONS, '4x'),
    'demo': ModelSpec('configs/demo/ssd300_bn_demo.py', None, '230026'),
}


class Call(NamedTuple):
    """One ``kse.kmeans`` call: B sets of P points of D values into q
    centroids, with its restarts and iteration limit."""

    b: int
    p: int
    d: int
    q: int
    inits: int
    max_iter: int

    @property
    def shape(self) -> Tuple[int, int, int, int]:
        return self.b, self.p, self.d, self.q


# ------------------------------------------------------------------ shapes
def build_model(name: str, seed: int = 0,
                checkpoint: Optional[str] = None) -> torch.nn.Module:
    """The dense model ``MODELS[name]``: seeded init weights, or the
    checkpoint's; eval mode, as tools/compress.py holds it."""
    from fsnet_mmdet.tools.count_params import build_model_from_config
    spec = MODELS[name]
    torch.manual_seed(seed)
    model = build_model_from_config(os.path.join(ROOT, spec.config), spec.options)
    if checkpoint:
        from fsnet_mmdet.engine.checkpoint import read_checkpoint
        model.load_state_dict(read_checkpoint(checkpoint)[0])
    else:
        logger = MMLogger.get_current_instance()
        level = logger.level
        logger.setLevel(logging.WARNING)  # not one INFO line per parameter
        try:
            model.init_weights()
        finally:
            logger.setLevel(level)
    return model.eval()


def record_kmeans(fn: Callable[[], object], run: bool = False
                  ) -> Tuple[object, List[Call]]:
    """Run ``fn()`` with ``kse.kmeans`` replaced by a recorder.

    Returns ``(fn's result, the calls in order)``. With ``run=False`` the
    recorder returns placeholders of the right shapes and types (the first q
    points as centroids, every label 0) instead of clustering.
    """
    calls: List[Call] = []
    real = kse.kmeans

    def recorder(points, q, seed=0, inits=kse.KMEANS_INITS,
                 max_iter=kse.KMEANS_ITERS):
        b, p, d = points.shape
        calls.append(Call(b, p, d, int(q), int(inits), int(max_iter)))
        if run:
            return real(points, q, seed=seed, inits=inits, max_iter=max_iter)
        return (points[:, :q].detach().clone(),
                torch.zeros(b, p, dtype=torch.long))

    with mock.patch.object(kse, 'kmeans', recorder):
        result = fn()
    return result, calls


def compression_calls(model: torch.nn.Module, target: str, seed: int = 0,
                      groups: int = 4) -> Tuple[List[Call], str]:
    """The k-means calls of ``tools/compress.py --method kse --target``
    on ``model`` (compressed in place, with placeholder clusters).

    Returns ``(calls in order, the tool's first report line: G and T)``.
    """
    from fsnet_mmdet.layers.accounting import count_params
    from fsnet_mmdet.tools.compress import compress_kse
    args = argparse.Namespace(kse_t=None, target=target, kse_groups=groups,
                              seed=seed, checkpoint='(recorded)')
    source_params = count_params(model).stored
    (_, lines), calls = record_kmeans(
        lambda: compress_kse(model, args, source_params))
    return calls, lines[0]


def shape_counts(calls: Sequence[Call]) -> List[Tuple[Call, int]]:
    """Distinct calls with their number, in order of first appearance."""
    counts = Counter(calls)
    return [(call, counts[call]) for call in dict.fromkeys(calls)]


# ----------------------------------------------------------------- inertia
def mean_inertia(points, centroids, labels) -> float:
    """Mean over the B sets of the sum of squared distances of each point
    to its assigned centroid, in float64.

    Args:
        points: (B, P, D); centroids: (B, q, D); labels: (B, P) ints
            (numpy arrays or tensors).
    """
    x = np.asarray(points, dtype=np.float64)
    c = np.asarray(centroids, dtype=np.float64)
    lab = np.asarray(labels, dtype=np.int64)
    assigned = np.take_along_axis(c, lab[..., None], axis=1)  # (B, P, D)
    return float(((x - assigned) ** 2).sum(axis=(1, 2)).mean())


def random_points(call: Call, seed: int) -> torch.Tensor:
    """(B, P, D) float32 standard normal points."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(call.b, call.p, call.d, generator=generator)


# ------------------------------------------------------------------- timing
def measure(call: Call, reps: int, seed: int, tol: float) -> dict:
    """Median seconds and mean inertia of ours and of sklearn's loop."""
    from sklearn.cluster import KMeans
    points = random_points(call, seed)
    array = points.numpy()
    out = {}

    def ours():
        out['ours'] = kse.kmeans(points, call.q, seed=seed, inits=call.inits,
                                 max_iter=call.max_iter)

    def sklearn_loop():
        fits = [KMeans(n_clusters=call.q, init='k-means++', n_init=call.inits,
                       max_iter=call.max_iter, tol=tol, random_state=seed,
                       algorithm='lloyd').fit(array[i])
                for i in range(call.b)]
        out['sklearn'] = (np.stack([f.cluster_centers_ for f in fits]),
                          np.stack([f.labels_ for f in fits]))

    times = interleaved({'ours': ours, 'sklearn': sklearn_loop}, reps)
    return dict(call=call, ours=med(times['ours']),
                sklearn=med(times['sklearn']),
                inertia_ours=mean_inertia(array, *(t.numpy() for t in out['ours'])),
                inertia_sklearn=mean_inertia(array, *out['sklearn']))


HEADER = (f'{"model":<5} {"shape (B, P, D, q)":<20} {"calls":>5} '
          f'{"ours s":>9} {"sklearn s":>9} {"sk/ours":>7} '
          f'{"inertia ours":>12} {"sklearn":>10}')


def format_row(model: str, row: dict, calls: int) -> str:
    shape = '(' + ', '.join(str(v) for v in row['call'].shape) + ')'
    return (f'{model:<5} {shape:<20} {calls:>5} {row["ours"]:>9.4f} '
            f'{row["sklearn"]:>9.4f} {row["sklearn"] / row["ours"]:>7.2f} '
            f'{row["inertia_ours"]:>12.3f} {row["inertia_sklearn"]:>10.3f}')


def format_total(model: str, rows: Sequence[Tuple[dict, int]]) -> str:
    """Seconds weighted by the calls (a whole-model compression), and the
    inertia summed over every clustered set."""
    ours = sum(r['ours'] * n for r, n in rows)
    sk = sum(r['sklearn'] * n for r, n in rows)
    i_ours = sum(r['inertia_ours'] * r['call'].b * n for r, n in rows)
    i_sk = sum(r['inertia_sklearn'] * r['call'].b * n for r, n in rows)
    calls = sum(n for _, n in rows)
    label = f'{model:<5} {"total (x calls)":<20}'
    return (f'{label} {calls:>5} {ours:>9.3f} {sk:>9.3f} {sk / ours:>7.2f} '
            f'{i_ours:>12.1f} {i_sk:>10.1f}  (inertia: sum over the sets)')


def quick_shapes(counted: Sequence[Tuple[Call, int]]) -> List[Tuple[Call, int]]:
    """The two distinct calls with the least work (B P D q), among those
    with q >= 2 where there are two (q = 1 is the mean, no clustering)."""
    real = [cn for cn in counted if cn[0].q > 1]
    return sorted(real if len(real) >= 2 else counted,
                  key=lambda cn: (cn[0].b * cn[0].p * cn[0].d * cn[0].q,
                                  cn[0].shape))[:2]


def require_sklearn() -> None:
    """Exit 2 with :data:`SKLEARN_MISSING` when scikit-learn is absent."""
    try:
        from sklearn.cluster import KMeans  # noqa: F401
    except ImportError:
        print(SKLEARN_MISSING, file=sys.stderr)
        raise SystemExit(2) from None


def main(argv: Optional[List[str]] = None) -> List[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--reps', type=int, default=5,
                        help='interleaved repetitions per shape (median)')
    parser.add_argument('--seed', type=int, default=0,
                        help='seed of the model init, the points and both '
                        'k-means')
    parser.add_argument('--tol', type=float, default=1e-4,
                        help="sklearn's tol (default its own, 1e-4: a center "
                        'shift test); 0 stops only when the labels stop '
                        'changing, as ours does')
    parser.add_argument('--models', nargs='+', choices=sorted(MODELS),
                        default=['tiny', 'demo'])
    parser.add_argument('--checkpoint',
                        help='trained weights of the demo model (the shapes '
                        'of a real compression); default its init weights')
    parser.add_argument('--quick', action='store_true',
                        help="the tiny model's two smallest shapes with q >= 2, "
                        '2 repetitions (a smoke test)')
    parser.add_argument('--list', action='store_true',
                        help='print the collected shapes only (no timing, '
                        'no sklearn)')
    args = parser.parse_args(argv)
    if not args.list:
        require_sklearn()
    models = ['tiny'] if args.quick else args.models
    reps = 2 if args.quick else args.reps
    collected = {}
    for name in models:
        model = build_model(name, args.seed,
                            args.checkpoint if name == 'demo' else None)
        calls, how = compression_calls(model, MODELS[name].target, args.seed)
        counted = shape_counts(calls)
        print(f'{name}: {MODELS[name].config}, target {MODELS[name].target}: '
              f'{how}; {len(calls)} k-means calls, {len(counted)} shapes, '
              f'n_init/max_iter {sorted({(c.inits, c.max_iter) for c in calls})}')
        collected[name] = quick_shapes(counted) if args.quick else counted
    if args.list:
        for name, counted in collected.items():
            for call, n in counted:
                print(f'{name:<5} {str(call.shape):<20} {n:>5}')
        return []
    import sklearn
    print(f'scikit-learn {sklearn.__version__} (tol {args.tol:g}), torch '
          f'threads {torch.get_num_threads()}, OMP_NUM_THREADS '
          f'{os.environ.get("OMP_NUM_THREADS", "unset")}, {reps} interleaved '
          f'repetitions (median), seed {args.seed}'
          + (' (--quick: two shapes)' if args.quick else ''))
    print(HEADER + '\n' + '-' * len(HEADER))
    rows = []
    for name, counted in collected.items():
        done = []
        for call, n in counted:
            row = measure(call, reps, args.seed, args.tol)
            row.update(model=name, calls=n)
            rows.append(row)
            done.append((row, n))
            print(format_row(name, row, n), flush=True)
        print(format_total(name, done))
        print('-' * len(HEADER))
    return rows


if __name__ == '__main__':
    main()
