"""The accuracy benchmark's points: every variant, its group, its method and
its one-line description (``--list``).

A point is a model and its training changes (:class:`Variant`): the dense
SSD300-BN at several widths, FS and DFSNet SSD300 at the demo width, the
experiments against them, and issue 22's other ways to shrink the detector
(int8, BSF, KSE, LRF). The named sets (``--compare``, ``--quick``) and the
demo configs the generated ones inherit are here too.
"""
import dataclasses
import os
from typing import Optional

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))))

DEMO_CONFIG = os.path.join(ROOT, 'configs', 'demo', 'fsnet_ssd300_demo.py')
BF16_DEMO_CONFIG = os.path.join(ROOT, 'configs', 'demo',
                                'fsnet_ssd300_demo_bf16.py')
#: The from-trained FS path's fine-tuning (250 iterations, lr 1e-3): the
#: schedule KSE and LRF fine-tune with.
FROM_DENSE_CONFIG = os.path.join(ROOT, 'configs', 'demo',
                                 'fsnet_ssd300_demo_from_dense.py')
DEMO_WIDTH = 0.25


@dataclasses.dataclass(frozen=True)
class Variant:
    """One point of the benchmark: a model and its training changes.

    Attributes:
        name: identifier (run directory, ``--variants``).
        label: text for the table.
        widen: width multiplier of every layer.
        fs: FSConv options, or None for dense ``nn.Conv2d``.
        matches: for dense points: the FS variant whose parameter count sets
            ``widen`` (resolved by :func:`.configs.matched_width`); for KSE /
            LRF points: the one whose parameter count is the compression
            target (resolved into ``target`` by :func:`.configs.resolve`).
        overrides: config text appended to the generated config (an
            experiment's training change); empty for the main curves.
        curve: the plot curve the point belongs to.
        dense_predictors: keep the head's class/box predictors ``nn.Conv2d``.
        pred_interleave: ``FSSSDHead(pred_interleave=True)``.
        base: the config the generated one inherits (the demo's, or the
            DFSNet demo's with its search hook and logits' learning rate).
        conv: options of another conv layer used for every conv (e.g.
            ``dict(type='BSFConv', bank_size=64, bank_channels=16)``), or
            None; a ``BSFConv`` gets the run's seed as its selection seed.
        source: for a point made from another point's trained model: that
            point's name (its run of the same seed, trained first if missing).
        compress: what is applied to the source's trained weights:
            ``'int8'`` (``tools/quantize_int8.py``, no training), ``'kse'``
            or ``'lrf'`` (``tools/compress.py``, then fine-tuning).
        target: for ``'kse'`` / ``'lrf'``: the parameter count to compress
            to (set by :func:`.configs.resolve` from ``matches``).
    """

    name: str
    label: str
    widen: float = DEMO_WIDTH
    fs: Optional[dict] = None
    matches: Optional[str] = None
    overrides: str = ''
    curve: str = ''
    dense_predictors: bool = False
    pred_interleave: bool = False
    base: str = DEMO_CONFIG
    conv: Optional[dict] = None
    source: Optional[str] = None
    compress: Optional[str] = None
    target: Optional[int] = None


def _fs(k3_scale: float, **options) -> dict:
    return dict(type='FSConv', preset='paper', k3_scale=k3_scale, **options)


MAIN = [
    Variant('dense-w0.25', 'dense SSD300-BN, width 0.25', curve='dense'),
    Variant('dense-w0.125', 'dense, width 0.125', widen=0.125, curve='dense'),
    Variant('fs-k3x0.5', 'FS, K3 x 0.5', fs=_fs(0.5), curve='fs'),
    Variant('fs-k3x1', 'FS, K3 x 1 (paper Table 1 rule)', fs=_fs(1), curve='fs'),
    Variant('fs-k3x2', 'FS, K3 x 2', fs=_fs(2), curve='fs'),
    Variant('fs-k3x0.5-interleave', 'FS, K3 x 0.5, pred_interleave',
            fs=_fs(0.5), pred_interleave=True, curve='fs-il'),
    Variant('fs-k3x1-interleave', 'FS, K3 x 1, pred_interleave', fs=_fs(1),
            pred_interleave=True, curve='fs-il'),
    Variant('fs-k3x2-interleave', 'FS, K3 x 2, pred_interleave', fs=_fs(2),
            pred_interleave=True, curve='fs-il'),
    Variant('dense-as-fs-k3x0.5', 'dense, params of FS K3 x 0.5',
            matches='fs-k3x0.5', curve='dense'),
    Variant('dense-as-fs-k3x1', 'dense, params of FS K3 x 1',
            matches='fs-k3x1', curve='dense'),
    Variant('dense-as-fs-k3x2', 'dense, params of FS K3 x 2',
            matches='fs-k3x2', curve='dense'),
]
#: Experiments (docs/accuracy.md "Why FS trailed"): one change each against fs-k3x1.
_LR2X = "optim_wrapper = dict(optimizer=dict(lr=6e-3))  # demo: 3e-3\n"
_LR_HALF = "optim_wrapper = dict(optimizer=dict(lr=1.5e-3))  # demo: 3e-3\n"
EXPERIMENTS = [
    Variant('fs-k3x1-selfwrap', 'FS K3 x 1, self_wrap=True (old stride rule)',
            fs=_fs(1, self_wrap=True)),
    Variant('fs-k3x2-selfwrap', 'FS K3 x 2, self_wrap=True (old stride rule)',
            fs=_fs(2, self_wrap=True)),
    Variant('fs-k3x1-sum', 'FS K3 x 1, grad_reduction=sum',
            fs=_fs(1, grad_reduction='sum')),
    Variant('fs-k3x1-lr2x', 'FS K3 x 1, lr x 2', fs=_fs(1),
            overrides=_LR2X),
    Variant('fs-k3x1-densepred', 'FS K3 x 1, dense predictors', fs=_fs(1),
            dense_predictors=True),
    Variant('dense-w0.25-lr2x', 'dense width 0.25, lr x 2',
            overrides=_LR2X),
    # Against fs-k3x{1,2}-interleave (the configs' recipe):
    *(Variant(f'fs-k3x{k}-interleave-1d',
              f'FS K3 x {k}, pred_interleave, 1D summary (later paper)',
              fs=_fs(k, layout='1d'), pred_interleave=True) for k in (1, 2)),
    Variant('fs-k3x1-interleave-lr0.5x', 'FS K3 x 1, pred_interleave, lr x 0.5',
            fs=_fs(1), pred_interleave=True, overrides=_LR_HALF),
    # bfloat16 training (BF16OptimWrapper), what `make demo` trains, against
    # fs-k3x1-interleave / dense-as-fs-k3x1 in float32:
    Variant('fs-k3x1-interleave-bf16', 'FS K3 x 1, pred_interleave, bf16 training',
            fs=_fs(1), pred_interleave=True, base=BF16_DEMO_CONFIG),
    Variant('dense-as-fs-k3x1-bf16', 'dense, params of FS K3 x 1, bf16 training',
            matches='fs-k3x1', base=BF16_DEMO_CONFIG),
]
#: DFSNet (docs/dfsnet.md): the FS pred_interleave points with learned
#: filter locations, searched for half the schedule, then discretized; the
#: logits start uniform (dfs_prior 0) or favouring the grid (2: the configs').
DFS_DEMO_CONFIG = os.path.join(ROOT, 'configs', 'demo', 'dfsnet_ssd300_demo.py')
#: Prior 2: a filter leaves the grid only where its gradient keeps pushing
#: it for much of the search.
DFS = [
    Variant(f'dfs{tag}-k3x{k}-interleave',
            f'DFSNet, {start}, K3 x {k}, pred_interleave',
            fs=_fs(k, dfs_radius=1, dfs_prior=prior), pred_interleave=True,
            curve=curve, base=DFS_DEMO_CONFIG)
    for tag, start, prior, curve in (('', 'uniform start', 0.0, 'dfs'),
                                     ('-prior2', 'grid prior 2', 2.0,
                                      'dfs-prior'))
    for k in (1, 2)
]
#: BSF points, (bank_size M, bank_channels d), every conv a BSFConv: their
#: compressed checkpoints (tools/compress_bsf.py) hold about 118, 179 and
#: 275 KB at the demo width, FS-WQ K3 x 1's 277 KB and below (count_params' bits:
#: 73.5, 139 and 211 KB; the file adds BatchNorm's statistics, 8- or 16-bit
#: indices and the zip framing). (64, 16) is the layer's default.
BSF_SIZES = ((64, 16), (256, 16), (1024, 8))
#: Issue 22: the other ways to shrink the detector, against FS and FS-WQ.
BASELINES = [
    Variant('dense-w0.25-int8', 'dense width 0.25, int8 weights',
            source='dense-w0.25', compress='int8'),
    Variant('dense-as-fs-k3x1-int8', 'dense, params of FS K3 x 1, int8 weights',
            source='dense-as-fs-k3x1', compress='int8'),
    *(Variant(f'bsf-m{m}-d{d}', f'BSF, bank of {m} binary filters of {d} '
              f'channels', conv=dict(type='BSFConv', bank_size=m,
                                     bank_channels=d))
      for m, d in BSF_SIZES),
    Variant('kse-as-fs-k3x1', 'KSE of the trained dense width 0.25 to FS '
            'K3 x 1 params, fine-tuned', source='dense-w0.25', compress='kse',
            matches='fs-k3x1'),
    Variant('lrf-as-fs-k3x1', 'LRF pruning of the trained dense width 0.25 to '
            'FS K3 x 1 params, fine-tuned', source='dense-w0.25',
            compress='lrf', matches='fs-k3x1'),
    # Pruning and 8-bit weights combine: LRF's fine-tuned model in int8 is
    # the pruned model at about FS-WQ's bytes.
    Variant('lrf-as-fs-k3x1-int8', 'LRF pruning to FS K3 x 1 params, '
            'fine-tuned, then int8 weights', source='lrf-as-fs-k3x1',
            compress='int8'),
]
GROUPS = {'main': MAIN, 'experiment': EXPERIMENTS, 'dfs': DFS,
          'compare': BASELINES}
VARIANTS = {v.name: v for v in MAIN + EXPERIMENTS + DFS + BASELINES}
#: ``--compare``: exactly issue 22's set. FS is the configs' recipe (K3 x 1,
#: pred_interleave) and brings its WQ row; the thin dense model is matched
#: to FS K3 x 1's parameter count (pred_interleave only reorders filters).
COMPARE = ['fs-k3x1-interleave', 'dense-w0.25', 'dense-as-fs-k3x1',
           'dense-w0.25-int8', 'dense-as-fs-k3x1-int8',
           *(f'bsf-m{m}-d{d}' for m, d in BSF_SIZES),
           'kse-as-fs-k3x1', 'lrf-as-fs-k3x1', 'lrf-as-fs-k3x1-int8']
#: ``--quick``, and ``--quick --compare``: one int8, one BSF and one
#: compressed-then-fine-tuned point (LRF; KSE takes the same path with
#: another --method, and its k-means is the slower); the first three are
#: shared, so a work dir of ``--quick`` resumes.
QUICK = ['dense-w0.25', 'fs-k3x1', 'dense-as-fs-k3x1']
QUICK_COMPARE = QUICK + ['dense-as-fs-k3x1-int8', 'bsf-m64-d16',
                         'lrf-as-fs-k3x1', 'lrf-as-fs-k3x1-int8']
#: Points whose trained weights another point starts from: their runs keep
#: ``weights_fp32.pth``.
SOURCES = {v.source for v in VARIANTS.values() if v.source}
FINETUNED = ('kse', 'lrf')


def is_bsf(variant: Variant) -> bool:
    """Whether every conv of a point is a ``BSFConv``."""
    return bool(variant.conv) and variant.conv.get('type') == 'BSFConv'


def method_of(variant: Variant) -> str:
    """The method a point belongs to (the comparison's markers and colours)."""
    if variant.compress == 'int8':
        pruned = VARIANTS[variant.source].compress
        return f'{pruned.upper() if pruned else "dense"} int8'
    if variant.compress:
        return variant.compress.upper()
    if variant.conv:
        return 'BSF' if is_bsf(variant) else variant.conv['type']
    if variant.fs:
        return 'DFSNet' if variant.base == DFS_DEMO_CONFIG else 'FS'
    return 'dense'


def describe(variant: Variant) -> str:
    """One line: the model and the steps of a point's runs."""
    v = variant
    if v.compress == 'int8':
        steps = (f'the trained {v.source} run of the same seed -> '
                 f'tools/quantize_int8.py -> tools/test.py')
    elif v.compress:
        steps = (f'the trained {v.source} run of the same seed -> '
                 f'tools/compress.py --method {v.compress} --target '
                 f'<{v.matches} parameters> -> tools/train.py '
                 f'(--finetune-iters, from-dense schedule) -> tools/test.py')
    elif is_bsf(v):
        steps = ('tools/train.py -> tools/compress_bsf.py -> tools/test.py on '
                 'the compressed checkpoint')
    else:
        steps = 'tools/train.py -> tools/test.py'
        if v.fs:
            steps += ' (+ WQ row: tools/quantize.py -> tools/test.py)'
    if v.source:
        width = f"{v.source}'s width"
    elif v.matches:
        width = f"width matched to {v.matches}'s parameters"
    else:
        width = f'width {v.widen:g}'
    if 'width' in v.label:  # the label says it
        return f'{v.label}; {steps}'
    return f'{v.label} ({width}); {steps}'


def list_text() -> str:
    """Every variant, one line each (``--list``)."""
    width = max(len(name) for name in VARIANTS)
    lines = [f'  {"variant":<{width}}  {"group":<10}  description '
             f'(* = in --compare)']
    for group, variants in GROUPS.items():
        lines += [f'{"*" if v.name in COMPARE else " "} {v.name:<{width}}  '
                  f'{group:<10}  {describe(v)}' for v in variants]
    return '\n'.join(lines)

