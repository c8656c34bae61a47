"""Accuracy of FSNet against dense SSD300 at several widths, measured.

Every point trains through the real tools on the demo's generated data with the
demo's schedule (``configs/demo/fsnet_ssd300_demo.py``: AdamW, batch 8, width
0.25), changing only the conv layers, the width and the seed:

* dense SSD300-BN at the demo width, at half of it, and at the widths whose
  parameter count is closest to each FS model's (found by bisection);
* FS SSD300 at the demo width with the paper's K3 rule scaled by
  ``k3_scale`` 0.5, 1 and 2 (about 2x less, as much, and 2x more compression
  in the 3x3 layers; Eq. 1), twice: with the head's predictors in grid order
  (the layer's default) and with ``FSSSDHead(pred_interleave=True)`` (the
  configs' default; docs/accuracy.md);
* the WQ version of every FS model (``tools/quantize.py``, then
  ``tools/test.py`` on the 8-bit checkpoint).

Per (point, seed): ``tools/train.py`` -> ``tools/test.py`` (VOC 11-point
mAP@0.5 on the test split) [-> ``tools/quantize.py`` -> ``tools/test.py``].
Finished runs are skipped (each writes ``result.json``), an interrupted
training resumes. Writes, under ``--docs``: ``results.md`` (the table, in the
form of the paper's Table 4), ``results.json`` (every run) and
``params_vs_map.png`` (the curves, mean +- std over seeds).

The comparison of issue 22 (``--compare``): FS and FS-WQ against the other
ways a user can shrink the same detector, on the same data and schedule:

* int8 weights of the dense width-0.25 model and of the thin dense model
  matched to FS K3 x 1's parameters: the trained run's weights ->
  ``tools/quantize_int8.py`` -> ``tools/test.py`` (no training of their own);
* binary stacked filters (``BSFConv`` for every conv) at three bank sizes,
  trained from scratch: ``tools/train.py`` -> ``tools/compress_bsf.py`` ->
  ``tools/test.py`` on the compressed checkpoint;
* KSE and LRF from the trained dense width-0.25 run of the same seed:
  ``tools/compress.py --target <FS K3 x 1's parameters>`` ->
  ``tools/train.py`` (``--finetune-iters``, 250 by default, at the schedule
  of the from-trained FS path, ``configs/demo/fsnet_ssd300_demo_from_dense.py``)
  -> ``tools/test.py``; LRF's fine-tuned model also in int8 (pruning and
  8-bit weights combine: the pruned model at about FS-WQ's bytes).

Every run also records its FLOPs (:func:`count_flops`, as mmdet's
``tools/analysis_tools/get_flops.py`` counts them). The comparison report goes
to ``docs/accuracy/compare``: ``results.md`` (one row per method and size:
parameters, checkpoint bytes, FLOPs, s / iteration, mAP mean +- std),
``results.json``, ``map_vs_bytes.png`` and ``map_vs_flops.png``.

    python benchmarks/bench_accuracy.py                        # the full set
    python benchmarks/bench_accuracy.py --iters 300 --seeds 0 1 2
    python benchmarks/bench_accuracy.py --variants fs-k3x1 fs-k3x1-lr2x   # experiments
    python benchmarks/bench_accuracy.py --compare              # issue 22's table
    python benchmarks/bench_accuracy.py --list                 # every variant
    python benchmarks/bench_accuracy.py --quick [--compare]    # tiny, for the tests
"""
import argparse
import contextlib
import dataclasses
import json
import os
import statistics
import sys
import time
from typing import Callable, Dict, List, Optional

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from fsnet_mmdet.tools.pipeline import (map_of, quantize_and_test,  # noqa: E402
                                        run_tool, schedule_text,
                                        seconds_per_iteration,
                                        train_resumable, training_records)
from fsnet_mmdet.utils.io import (atomic_path, write_json_atomic,  # noqa: E402
                                 write_text_atomic)

DEMO_CONFIG = os.path.join(ROOT, 'configs', 'demo', 'fsnet_ssd300_demo.py')
BF16_DEMO_CONFIG = os.path.join(ROOT, 'configs', 'demo',
                                'fsnet_ssd300_demo_bf16.py')
#: The from-trained FS path's fine-tuning (250 iterations, lr 1e-3): the
#: schedule KSE and LRF fine-tune with.
FROM_DENSE_CONFIG = os.path.join(ROOT, 'configs', 'demo',
                                 'fsnet_ssd300_demo_from_dense.py')
DEMO_WIDTH = 0.25
#: One test image of the demo pipeline (Resize to 300 x 300, keep_ratio
#: False): the input get_flops.py counts FLOPs on.
FLOPS_IMAGE = (300, 300)
#: Paper Table 4 (parameters, VOC2007 test mAP %): shown on its own panel.
PAPER_TABLE4 = {
    'SSD300-BN': (26.32e6, 77.31), 'FSNet-1': (1.67e6, 67.60),
    'FSNet-1-WQ': (0.45e6, 67.63), 'FSNet-2': (2.59e6, 70.14),
    'FSNet-2-WQ': (0.68e6, 70.00),
}


@dataclasses.dataclass(frozen=True)
class Variant:
    """One point of the benchmark: a model and its training changes.

    Attributes:
        name: identifier (run directory, ``--variants``).
        label: text for the table.
        widen: width multiplier of every layer.
        fs: FSConv options, or None for dense ``nn.Conv2d``.
        matches: for dense points: the FS variant whose parameter count sets
            ``widen`` (resolved by :func:`matched_width`); for KSE / LRF
            points: the one whose parameter count is the compression target
            (resolved into ``target`` by :func:`resolve`).
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
            to (set by :func:`resolve` from ``matches``).
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
#: 275 KB at the demo width, FS-WQ K3 x 1's 277 KB and below (count_bits:
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


def _is_bsf(variant: Variant) -> bool:
    return bool(variant.conv) and variant.conv.get('type') == 'BSFConv'


def method_of(variant: Variant) -> str:
    """The method a point belongs to (the comparison's markers and colours)."""
    if variant.compress == 'int8':
        pruned = VARIANTS[variant.source].compress
        return f'{pruned.upper() if pruned else "dense"} int8'
    if variant.compress:
        return variant.compress.upper()
    if variant.conv:
        return 'BSF' if _is_bsf(variant) else variant.conv['type']
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
    elif _is_bsf(v):
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


# ------------------------------------------------------------------ configs
def config_text(variant: Variant, seed: int, iters: int, data_root: str,
                wq: bool = False) -> str:
    """The generated config of one run: the demo config plus the variant."""
    from fsnet_mmdet.models.fs_ssd_vgg import ssd300_widths

    if variant.source:
        raise ValueError(f'{variant.name} is made from {variant.source}\'s '
                         f'trained model: generate {variant.source}\'s config')
    widths = list(ssd300_widths(variant.widen))
    layer = variant.fs or variant.conv
    if _is_bsf(variant):  # the fixed selection is drawn from the run's seed
        layer = dict(layer, seed=seed)
    conv = dict(variant.fs, wq=True) if (variant.fs and wq) else (
        layer or dict(type='Conv2d'))
    pred = dict(type='Conv2d') if variant.dense_predictors else conv
    # _delete_: the demo config's FSConv options must not leak into these.
    conv, pred = dict(conv, _delete_=True), dict(pred, _delete_=True)
    warmup = min(30, iters // 2)  # the demo's 30-iteration warm-up, then cosine
    text = f"""# Generated by benchmarks/bench_accuracy.py: {variant.label}, seed {seed}.
_base_ = {variant.base!r}
conv = {conv!r}
model = dict(
    backbone=dict(widen_factor={variant.widen!r}, conv_cfg=conv),
    neck=dict(in_channels={widths[:2]!r}, out_channels={widths!r},
              conv_cfg=conv),
    bbox_head=dict(in_channels={widths!r}, pred_conv_cfg={pred!r},
                   pred_interleave={variant.pred_interleave!r}))
""" + schedule_text(seed, iters, warmup, 0.01, 3e-5, data_root)
    return text + variant.overrides


def finetune_text(base: str, label: str, seed: int, iters: int) -> str:
    """The fine-tuning config of a compressed model: ``base`` (the config
    ``tools/compress.py`` wrote, which loads its checkpoint) with the schedule
    of the from-trained FS path (``configs/demo/fsnet_ssd300_demo_from_dense.py``:
    its learning rate, linear warm-up and cosine decay), ``iters`` long."""
    from mmengine.config import Config

    reference = Config.fromfile(FROM_DENSE_CONFIG)
    warm, cosine = reference.param_scheduler
    end = min(warm['end'], iters // 2)
    lr = reference.optim_wrapper.optimizer.lr
    return f"""# Generated by benchmarks/bench_accuracy.py: {label}, seed {seed}:
# fine-tuning at the schedule of configs/demo/fsnet_ssd300_demo_from_dense.py.
_base_ = {base!r}
optim_wrapper = dict(optimizer=dict(lr={lr!r}))
""" + schedule_text(seed, iters, end, warm['start_factor'], cosine['eta_min'])


def write_config(path: str, text: str) -> str:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, 'w') as f:
        f.write(text)
    return path



def build(variant: Variant, work: str, data_root: str,
          state_dict: Optional[dict] = None):
    """A variant's model (built from its generated config), with
    ``state_dict`` loaded."""
    from fsnet_mmdet.tools.count_params import build_model_from_config

    path = write_config(os.path.join(work, 'count_config.py'),
                        config_text(variant, 0, 10, data_root))
    model = build_model_from_config(path)
    if state_dict is not None:
        model.load_state_dict(state_dict)
    return model


def count(variant: Variant, work: str, data_root: str,
          state_dict: Optional[dict] = None):
    """ParamCounts of a variant's model (built from its generated config),
    with ``state_dict`` loaded (a DFSNet model counts as discretized)."""
    from fsnet_mmdet.layers.fsconv import count_params

    return count_params(build(variant, work, data_root, state_dict))


def count_flops(model, image_size=FLOPS_IMAGE) -> int:
    """FLOPs of one image through a detector, as mmdet's get_flops.py counts.

    ``tools/analysis_tools/get_flops.py`` builds the model, puts it in eval
    mode and takes ``mmengine.analysis.get_model_complexity_info(model,
    inputs=<one preprocessed test image>)['flops']``, which is
    ``FlopAnalyzer(model, inputs).total()`` of the tensor-mode forward
    (backbone, neck, head; no NMS). Here: a zero (1, 3, H, W) image, the
    demo pipeline's 300 x 300 (:func:`fsnet_mmdet.compression.structure.model_flops`).

    mmengine's rules: a conv counts one per multiply-add, ``K C / groups S1
    S2`` per output pixel (its bias nothing); BatchNorm in eval mode two per
    element (one without affine); ops without a rule (ReLU, max-pool,
    indexing, elementwise products) nothing. So a layer that computes its
    weight and then runs ``F.conv2d`` counts as the conv it runs: FSConv,
    BSFConv in its ``'weight'`` forward (the benchmark's; its
    split-transform-merge forward would count its grouped conv instead),
    KSEConv over its kept input channels; int8 weights count as the dense
    model's.

    Args:
        model: the detector (any ``nn.Module`` taking a (1, 3, H, W) batch).
        image_size: (H, W).

    Returns:
        The FLOP count.
    """
    from fsnet_mmdet.compression.structure import model_flops

    return model_flops(model, tuple(image_size))


def matched_width(target: int, work: str, data_root: str,
                  low: float = 0.01, high: float = DEMO_WIDTH) -> float:
    """Width of the dense model whose parameter count is closest to ``target``.

    Bisection on ``widen_factor`` (the count grows with the width), then the
    closer of the two bracketing widths, rounded to 4 decimals.
    """
    def params(w: float) -> int:
        return count(Variant('probe', 'probe', widen=w), work, data_root).stored

    for _ in range(14):
        mid = (low + high) / 2
        if params(mid) < target:
            low = mid
        else:
            high = mid
    low, high = round(low, 4), round(high, 4)
    return min((low, high), key=lambda w: abs(params(w) - target))


def resolve(variants: List[Variant], work: str, data_root: str) -> List[Variant]:
    """Set the width of every dense point that matches an FS point's count;
    a point made from another takes its source's width and, for KSE / LRF,
    its target parameter count."""
    out = []
    cache_path = os.path.join(work, 'matched_widths.json')
    cache = json.load(open(cache_path)) if os.path.exists(cache_path) else {}
    for v in variants:
        if v.source:
            source = resolve([VARIANTS[v.source]], work, data_root)[0]
            v = dataclasses.replace(v, widen=source.widen)
            if v.compress in FINETUNED:
                v = dataclasses.replace(v, target=count(
                    VARIANTS[v.matches], work, data_root).stored)
        elif v.matches:
            if v.matches not in cache:
                target = count(VARIANTS[v.matches], work, data_root).stored
                cache[v.matches] = matched_width(target, work, data_root)
                with open(cache_path, 'w') as f:
                    json.dump(cache, f)
            v = dataclasses.replace(v, widen=cache[v.matches])
        out.append(v)
    return out


# --------------------------------------------------------------------- runs
def final_loss(train_dir: str, key: str = 'loss') -> Optional[float]:
    """Mean of a logged training loss over the last quarter of the iterations.

    A second, less noisy measure of fit than a 250-iteration mAP, which sits
    where detections first clear the score threshold.

    Args:
        train_dir: the run's training work dir.
        key: ``'loss'`` (the total), ``'loss_cls'`` or ``'loss_bbox'``.
    """
    losses = [r[key] for r in training_records(train_dir) if key in r]
    tail = losses[-max(1, len(losses) // 4):]
    return statistics.mean(tail) if tail else None


LOSSES = ('loss', 'loss_cls', 'loss_bbox')


def run_in_process(main: Callable, tool: str, *args, log: str,
                   what: str) -> None:
    """Run a checkpoint tool's ``main(argv)`` (what ``tools/<tool>`` runs) in
    this process, its output appended to ``log``.

    For the tools that only read and write checkpoints (quantize_int8,
    compress_bsf, compress): it saves an interpreter start per step.
    Training and testing stay separate processes (:func:`run_tool`).

    Raises:
        SystemExit: the tool failed; names the command and the log file.
    """
    argv = [str(a) for a in args]
    with open(log, 'a') as f:
        f.write(f'$ {tool} {" ".join(argv)}  (in the benchmark process)\n')
        f.flush()
        try:
            with contextlib.redirect_stdout(f), contextlib.redirect_stderr(f):
                main(argv)
        except SystemExit as err:
            if err.code not in (None, 0):
                f.write(f'{err.code}\n')
                raise SystemExit(f'{what}: step failed: {tool} '
                                 f'{" ".join(argv)} (output in {log})') from None


_FLOPS: Dict[str, int] = {}


def _config_flops(variant: Variant, config: str) -> int:
    """FLOPs of the model a finished run's config builds (once per point)."""
    from fsnet_mmdet.tools.count_params import build_model_from_config

    if variant.name not in _FLOPS:
        _FLOPS[variant.name] = count_flops(build_model_from_config(config))
    return _FLOPS[variant.name]


def run_one(variant: Variant, seed: int, iters: int, work: str,
            data_root: str, finetune_iters: int = 250) -> dict:
    """Run one point (train, test, and its compression steps); returns its
    result, read back when the run has finished before."""
    run_dir = os.path.join(work, variant.name, f'seed{seed}')
    result_path = os.path.join(run_dir, 'result.json')
    train_dir = os.path.join(run_dir, 'train')
    if os.path.exists(result_path):
        result = json.load(open(result_path))
        if variant.compress in FINETUNED and result.get(
                'finetune_iters') != finetune_iters:
            raise SystemExit(
                f'{result_path}: fine-tuned {result.get("finetune_iters")} '
                f'iterations, asked for --finetune-iters {finetune_iters}: use '
                f'another --work-dir')
        for key in LOSSES:  # results written before these were recorded
            result.setdefault(key, final_loss(train_dir, key))
        if result.get('flops') is None:  # ... or before FLOPs were counted
            result['flops'] = _config_flops(variant, os.path.join(run_dir,
                                                                  'config.py'))
        return result
    start = time.time()
    os.makedirs(run_dir, exist_ok=True)
    steps = dict(log=os.path.join(run_dir, 'log.txt'),
                 what=f'bench_accuracy {variant.name} seed {seed}')
    if variant.compress:
        source = resolve([VARIANTS[variant.source]], work, data_root)[0]
        src = source_run(source, seed, iters, work, data_root,
                         finetune_iters, **steps)
        if variant.compress == 'int8':
            result = _run_int8(variant, seed, iters, run_dir, src, **steps)
        else:
            result = _run_finetuned(variant, seed, iters, run_dir, src,
                                    finetune_iters, **steps)
    else:
        result = _run_trained(variant, seed, iters, run_dir, data_root, **steps)
    result['wall_s'] = time.time() - start
    write_json_atomic(result_path, result)
    return result


def _run_trained(variant: Variant, seed: int, iters: int, run_dir: str,
                 data_root: str, log: str, what: str) -> dict:
    """Train, test (and quantize + test, or compress + test) one point."""
    from fsnet_mmdet.utils.io import save_atomic
    from fsnet_mmdet.layers.fsconv import count_params
    import torch

    train_dir = os.path.join(run_dir, 'train')
    config = write_config(os.path.join(run_dir, 'config.py'),
                          config_text(variant, seed, iters, data_root))
    checkpoint = train_resumable(config, train_dir, log=log, what=what)
    tested = checkpoint
    if _is_bsf(variant):  # what ships: packed sign bits (same outputs)
        from fsnet_mmdet.tools.baseline_checkpoints import compress_bsf_main
        tested = os.path.join(run_dir, 'weights_bsf.pth')
        run_in_process(compress_bsf_main, 'tools/compress_bsf.py', config,
                       checkpoint, tested, log=log, what=what)
    test_dir = os.path.join(run_dir, 'test')
    run_tool('tools/test.py', config, tested, '--work-dir', test_dir,
             log=log, what=what)
    state = torch.load(checkpoint, map_location='cpu', weights_only=False)
    model = build(variant, run_dir, data_root, state['state_dict'])
    counts = count_params(model)
    fp32 = os.path.join(run_dir, 'weights_fp32.pth')
    result = dict(variant=variant.name, seed=seed, iters=iters,
                  widen=variant.widen, params=counts.stored,
                  mAP=map_of(test_dir), s_iter=seconds_per_iteration(train_dir),
                  **{key: final_loss(train_dir, key) for key in LOSSES},
                  bytes=save_atomic(state['state_dict'], fp32),
                  flops=count_flops(model))
    if _is_bsf(variant):
        from fsnet_mmdet.compression.bsf import count_bits
        bits = count_bits(model)
        result.update(bytes_float=result['bytes'], bytes=os.path.getsize(tested),
                      bits=bits, effective=bits / 32)
    if variant.fs:
        wq_config = write_config(os.path.join(run_dir, 'config_wq.py'),
                                 config_text(variant, seed, iters, data_root,
                                             wq=True))
        mAP_wq, bytes_wq = quantize_and_test(config, wq_config, checkpoint,
                                             run_dir, log=log, what=what)
        result.update(effective_wq=counts.effective_wq, mAP_wq=mAP_wq,
                      bytes_wq=bytes_wq)
    # Keep results, not 1-7 MB weights; a point others start from keeps its
    # float weights (weights_fp32.pth).
    for path in (checkpoint,) + (() if variant.name in SOURCES else (fp32,)):
        os.remove(path)
    return result


def source_run(source: Variant, seed: int, iters: int, work: str,
               data_root: str, finetune_iters: int, log: str,
               what: str) -> dict:
    """The trained run a point starts from: ``dict(config, weights, result)``.

    Trains the source point (its own run, same seed) if it has not run; a run
    that finished before its weights were kept is trained (a compressed
    point: compressed and fine-tuned) again, with the same generated config
    and seed, under its ``retrain/`` (the row keeps the first run's mAP; the
    retrained weights are what the point uses).
    """
    from fsnet_mmdet.utils.io import save_atomic
    import torch

    src_dir = os.path.join(work, source.name, f'seed{seed}')
    result = run_one(source, seed, iters, work, data_root, finetune_iters)
    if result.get('iters') != iters:
        raise SystemExit(f'{src_dir}: trained {result.get("iters")} '
                         f'iterations, this benchmark {iters}: use another '
                         f'--work-dir')
    weights = os.path.join(src_dir, 'weights_fp32.pth')
    config = os.path.join(src_dir, 'config.py')
    retrain = os.path.join(src_dir, 'retrain')
    if not os.path.exists(weights):
        again = 'compressing and fine-tuning' if source.compress else 'training'
        print(f'    {source.name} seed {seed} finished without its weights: '
              f'{again} it again in {retrain}', flush=True)
        if source.compress:
            parent = resolve([VARIANTS[source.source]], work, data_root)[0]
            _run_finetuned(source, seed, iters, retrain, source_run(
                parent, seed, iters, work, data_root, finetune_iters, log,
                what), finetune_iters, log, what)
            os.replace(os.path.join(retrain, 'weights_fp32.pth'), weights)
        else:
            checkpoint = train_resumable(
                write_config(os.path.join(retrain, 'config.py'),
                             config_text(source, seed, iters, data_root)),
                os.path.join(retrain, 'train'), log=log, what=what)
            state = torch.load(checkpoint, map_location='cpu',
                               weights_only=False)
            save_atomic(state['state_dict'], weights)
            os.remove(checkpoint)
    if os.path.exists(os.path.join(retrain, 'config.py')):
        config = os.path.join(retrain, 'config.py')
    return dict(config=config, weights=weights, result=result)


def _run_int8(variant: Variant, seed: int, iters: int, run_dir: str,
              src: dict, log: str, what: str) -> dict:
    """int8 weights of the source's trained model, tested."""
    from fsnet_mmdet.layers.fsconv import count_params
    from fsnet_mmdet.compression.int8 import effective_params, int8_weights
    from fsnet_mmdet.tools.baseline_checkpoints import quantize_int8_main
    from fsnet_mmdet.tools.count_params import build_model_from_config

    out = os.path.join(run_dir, 'weights_int8.pth')
    run_in_process(quantize_int8_main, 'tools/quantize_int8.py', src['config'],
                   src['weights'], out, log=log, what=what)
    test_dir = os.path.join(run_dir, 'test')
    run_tool('tools/test.py', src['config'], out, '--work-dir', test_dir,
             log=log, what=what)
    model = build_model_from_config(src['config'])
    weights, state = int8_weights(model), model.state_dict()
    quantized = sum(state[k].numel() for k in weights)
    channels = sum(state[k].shape[axis] for k, axis in weights.items())
    params = count_params(model).stored
    finetuned = src['result'].get('finetune_iters')  # the source's, shown
    return dict(variant=variant.name, seed=seed, iters=iters,
                **({'finetune_iters': finetuned} if finetuned else {}),
                widen=variant.widen, source=variant.source, params=params,
                effective=effective_params(params, quantized, channels),
                bytes=os.path.getsize(out), mAP=map_of(test_dir),
                mAP_source=src['result']['mAP'],
                s_iter=src['result'].get('s_iter'),
                **{key: None for key in LOSSES}, flops=count_flops(model))


def _run_finetuned(variant: Variant, seed: int, iters: int, run_dir: str,
                   src: dict, finetune_iters: int, log: str, what: str) -> dict:
    """KSE or LRF of the source's trained model, fine-tuned, tested."""
    from fsnet_mmdet.compression.structure import stored_params
    from fsnet_mmdet.utils.io import save_atomic
    from fsnet_mmdet.tools.compress import main as compress_main
    from fsnet_mmdet.tools.count_params import build_model_from_config
    import torch

    compressed = os.path.join(run_dir, 'compressed')
    report_path = os.path.join(compressed, 'report.json')
    if not os.path.exists(report_path):  # written last: the pair is complete
        options = ['--seed', seed] if variant.compress == 'kse' else []
        run_in_process(compress_main, 'tools/compress.py', src['config'],
                       src['weights'], '--method', variant.compress,
                       '--target', variant.target, *options, '--out-dir',
                       compressed, log=log, what=what)
    report = json.load(open(report_path))
    config = write_config(os.path.join(run_dir, 'config.py'), finetune_text(
        os.path.join(compressed, 'config.py'), variant.label, seed,
        finetune_iters))
    train_dir = os.path.join(run_dir, 'train')
    checkpoint = train_resumable(config, train_dir, log=log, what=what)
    test_dir = os.path.join(run_dir, 'test')
    run_tool('tools/test.py', config, checkpoint, '--work-dir', test_dir,
             log=log, what=what)
    state = torch.load(checkpoint, map_location='cpu', weights_only=False)
    model = build_model_from_config(config)
    model.load_state_dict(state['state_dict'])
    params, bits = stored_params(model)
    fp32 = os.path.join(run_dir, 'weights_fp32.pth')
    result = dict(variant=variant.name, seed=seed, iters=iters,
                  finetune_iters=finetune_iters, widen=variant.widen,
                  source=variant.source, target=variant.target, params=params,
                  index_bits=bits, effective=params + bits / 32,
                  mAP=map_of(test_dir), mAP_source=src['result']['mAP'],
                  s_iter=seconds_per_iteration(train_dir),
                  **{key: final_loss(train_dir, key) for key in LOSSES},
                  bytes=save_atomic(state['state_dict'], fp32),
                  flops=count_flops(model), compression=report['settings'])
    # A point others start from keeps its float weights, as _run_trained's.
    for path in (checkpoint, os.path.join(compressed, 'checkpoint.pth')) + (
            () if variant.name in SOURCES else (fp32,)):
        os.remove(path)
    return result


def cost(variant: Variant, iters: int, finetune_iters: int) -> int:
    """Training iterations of a point's run (the ETA's unit)."""
    if variant.compress == 'int8':
        return 0
    return finetune_iters if variant.compress else iters


# ------------------------------------------------------------------ report
def _mean_std(values: List[float]) -> tuple:
    return (statistics.mean(values),
            statistics.stdev(values) if len(values) > 1 else 0.0)


def _typical(values: list):
    """The mean over seeds (exact for the counts that do not vary), an int
    for ints."""
    mean = statistics.mean(values)
    return round(mean) if all(isinstance(v, int) for v in values) else mean


def _schedule(variant: Variant, run: dict) -> str:
    """Training iterations of a run, as the table shows them."""
    text = str(run.get('iters', '-'))
    if run.get('finetune_iters'):
        text += f' + {run["finetune_iters"]}'
    return text + (', then int8' if variant.compress == 'int8' else '')


def summarize(variants: List[Variant], results: List[dict]) -> List[dict]:
    """One row per variant (and per WQ variant): mean and std over seeds."""
    rows = []
    for v in variants:
        runs = [r for r in results if r['variant'] == v.name]
        if not runs:
            continue
        times = [r['s_iter'] for r in runs if r.get('s_iter')]
        flops = [r['flops'] for r in runs if r.get('flops') is not None]
        base = dict(name=v.name, label=v.label, widen=v.widen, curve=v.curve,
                    method=method_of(v), seeds=len(runs),
                    params=_typical([r['params'] for r in runs]),
                    s_iter=statistics.median(times) if times else None,
                    flops=_typical(flops) if flops else None,
                    schedule=_schedule(v, runs[0]))
        for key in LOSSES:
            losses = [r[key] for r in runs if r.get(key) is not None]
            base[key] = statistics.mean(losses) if losses else None
        m, s = _mean_std([r['mAP'] for r in runs])
        rows.append(dict(base, effective=_typical([r.get('effective',
                                                         r['params'])
                                                   for r in runs]),
                         bytes=_typical([r['bytes'] for r in runs]), mAP=m,
                         std=s, maps=[r['mAP'] for r in runs]))
        if 'mAP_wq' in runs[0]:
            m, s = _mean_std([r['mAP_wq'] for r in runs])
            rows.append(dict(base, name=v.name + '-wq', label=v.label + ', WQ',
                             curve=v.curve + '-wq' if v.curve else '',
                             method=base['method'] + '-WQ',
                             effective=_typical([r['effective_wq']
                                                 for r in runs]),
                             bytes=_typical([r['bytes_wq'] for r in runs]),
                             mAP=m, std=s, maps=[r['mAP_wq'] for r in runs]))
    return rows


def table(rows: List[dict]) -> str:
    widest = next((r for r in rows if r['name'] == 'dense-w0.25'), None)
    lines = ['| model | width | # params | effective params | checkpoint bytes '
             '| s / iter | final train loss (cls + bbox) | mAP@0.5 (mean +- std) | seeds '
             '| retention vs dense w0.25 |',
             '|---|---|---|---|---|---|---|---|---|---|']
    def order(r: dict) -> tuple:  # curves in turn, each followed by its WQ
        return (r['curve'] == '', r['curve'].removesuffix('-wq'),
                r['curve'].endswith('-wq'), -r['effective'])

    for r in sorted(rows, key=order):
        keep = (f'{100 * r["mAP"] / widest["mAP"]:.0f}%' if widest and
                widest['mAP'] > 0 else '-')
        speed = f'{r["s_iter"]:.2f}' if r['s_iter'] else '-'
        loss = (f'{r["loss"]:.2f} ({r["loss_cls"]:.2f} + {r["loss_bbox"]:.2f})'
                if r.get('loss_bbox') is not None
                and not r['name'].endswith('-wq') else '-')
        lines.append(
            f'| {r["label"]} | {r["widen"]:g} | {r["params"]:,} | '
            f'{r["effective"]:,.0f} | {r["bytes"]:,} | {speed} | {loss} | '
            f'{r["mAP"]:.3f} +- {r["std"]:.3f} | {r["seeds"]} | {keep} |')
    return '\n'.join(lines)


def plot(rows: List[dict], out: str, title: str) -> None:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    fig, (ax, paper) = plt.subplots(
        1, 2, figsize=(11, 4.5), gridspec_kw=dict(width_ratios=[2, 1]))
    styles = {'dense': ('tab:blue', 'o', 'dense SSD300-BN, widths'),
              'fs': ('tab:red', 's', 'FS SSD300 (width 0.25), K3 x 0.5/1/2, '
                     'grid order'),
              'fs-wq': ('tab:orange', 'v', 'FS grid order, WQ (effective params)'),
              'fs-il': ('tab:green', 'D', 'FS, pred_interleave (the configs\' '
                        'default)'),
              'fs-il-wq': ('tab:olive', '^', 'FS pred_interleave, WQ (effective '
                           'params)'),
              'dfs': ('tab:purple', 'P', 'DFSNet, uniform start'),
              'dfs-wq': ('tab:pink', '*', 'DFSNet, WQ (effective params)'),
              'dfs-prior': ('tab:brown', 'X', 'DFSNet, grid prior 2 (the configs\')'),
              'dfs-prior-wq': ('tab:gray', 'p', 'DFSNet grid prior 2, WQ')}
    for curve, (color, marker, label) in styles.items():
        pts = sorted((r for r in rows if r['curve'] == curve),
                     key=lambda r: r['effective'])
        if pts:
            ax.errorbar([p['effective'] for p in pts],
                        [100 * p['mAP'] for p in pts],
                        yerr=[100 * p['std'] for p in pts], color=color,
                        marker=marker, capsize=3, label=label)
    for r in rows:
        if not r['curve']:
            ax.errorbar([r['effective']], [100 * r['mAP']],
                        yerr=[100 * r['std']], marker='x', color='gray',
                        capsize=3)
            ax.annotate(r['label'], (r['effective'], 100 * r['mAP']),
                        fontsize=6, xytext=(4, 3), textcoords='offset points')
    ax.set_xscale('log')
    ax.set_xlabel('(effective) parameters')
    ax.set_ylabel('mAP@0.5 (%), demo test split')
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3, which='both')
    ax.legend(fontsize=7)
    for name, (params, m) in PAPER_TABLE4.items():
        paper.scatter(params, m, color='tab:gray', marker='s')
        paper.annotate(name, (params, m), fontsize=7, xytext=(4, 2),
                       textcoords='offset points')
    paper.set_xscale('log')
    paper.set_xlabel('parameters')
    paper.set_ylabel('mAP (%), VOC2007 test')
    paper.set_title("The paper's Table 4 (VOC07+12, full width):\n"
                    'not our measurement, other data', fontsize=9)
    paper.grid(alpha=0.3, which='both')
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


# ------------------------------------------------------- comparison report
#: The comparison's methods in table order, with their colour and marker.
METHOD_STYLES = {
    'FS': ('tab:red', 's'), 'FS-WQ': ('tab:orange', 'v'),
    'dense': ('tab:blue', 'o'), 'dense int8': ('tab:cyan', '^'),
    'BSF': ('tab:purple', 'P'), 'KSE': ('tab:green', 'D'),
    'LRF': ('tab:brown', 'X'), 'LRF int8': ('tab:olive', '<'),
    'DFSNet': ('tab:pink', '*'),
    'DFSNet-WQ': ('tab:gray', 'p'),
}


def _method_rank(method: str) -> int:
    names = list(METHOD_STYLES)
    return names.index(method) if method in names else len(names)


def pareto_front(rows: List[dict], cost_key: str = 'bytes') -> List[str]:
    """Names of the rows no other row beats on (cost, mean mAP): none has a
    cost <= theirs and a higher mean mAP. Rows without the cost are left out."""
    known = [r for r in rows if r.get(cost_key) is not None]
    return [r['name'] for r in known
            if not any(o is not r and o[cost_key] <= r[cost_key]
                       and o['mAP'] > r['mAP'] for o in known)]


def clear_winners(rows: List[dict], ref: dict,
                  cost_key: str = 'bytes') -> List[dict]:
    """Rows at a cost <= ``ref``'s whose mean mAP is higher by more than one
    standard deviation (the larger of the two rows' std over seeds): the
    issue's test of FS-WQ's place on the bytes front."""
    return [o for o in rows if o is not ref and o.get(cost_key) is not None
            and o[cost_key] <= ref[cost_key]
            and o['mAP'] - ref['mAP'] > max(o['std'], ref['std'])]


def compare_table(rows: List[dict]) -> str:
    """The comparison: one row per method and size."""
    fronts = {key: set(pareto_front(rows, key)) for key in ('bytes', 'flops')}
    lines = ['| method | model | # params | effective params | checkpoint bytes '
             '| GFLOPs (300x300) | training iterations | s / iter '
             '| mAP@0.5 (mean +- std) | seeds | Pareto front |',
             '|---|---|---|---|---|---|---|---|---|---|---|']
    for r in sorted(rows, key=lambda r: (_method_rank(r['method']),
                                         r['method'], -r['bytes'])):
        speed = f'{r["s_iter"]:.2f}' if r['s_iter'] else '-'
        flops = f'{r["flops"] / 1e9:.3f}' if r.get('flops') is not None else '-'
        front = ', '.join(k if k == 'bytes' else 'FLOPs' for k in ('bytes', 'flops')
                          if r['name'] in fronts[k]) or '-'
        lines.append(
            f'| {r["method"]} | {r["label"]} | {r["params"]:,} | '
            f'{r["effective"]:,.0f} | {r["bytes"]:,} | {flops} | '
            f'{r["schedule"]} | {speed} | {r["mAP"]:.3f} +- {r["std"]:.3f} | '
            f'{r["seeds"]} | {front} |')
    return '\n'.join(lines)


def front_notes(rows: List[dict]) -> str:
    """Every FS-WQ row's place on the bytes-vs-mAP front, in words."""
    notes = []
    front = set(pareto_front(rows, 'bytes'))
    for ref in (r for r in rows if r['method'] == 'FS-WQ'):
        better = clear_winners(rows, ref, 'bytes')
        notes.append(
            f'{ref["label"]} ({ref["bytes"]:,} bytes, mAP {ref["mAP"]:.3f} +- '
            f'{ref["std"]:.3f}): '
            + ('on' if ref['name'] in front else 'not on')
            + ' the bytes-vs-mAP Pareto front; rows at <= its bytes with a '
            'mean mAP higher by more than one std: '
            + (', '.join(f'{o["label"]} ({o["bytes"]:,} bytes, {o["mAP"]:.3f} '
                         f'+- {o["std"]:.3f}, {_seeds(o)})' for o in better)
               or 'none')
            + '.' + _one_seed_caveat([ref] + better))
    return '\n'.join(notes)


def _seeds(row: dict) -> str:
    n = row.get('seeds', 1)
    return f'{n} seed{"s" if n != 1 else ""}'


def _one_seed_caveat(rows: List[dict]) -> str:
    """What the one-std test means when some of its rows have one seed (a
    std of 0: the test is then only as strict as the other row's spread)."""
    single = [r['label'] for r in rows if r.get('seeds', 1) < 2]
    return (f' One seed (std unknown, counted as 0): {", ".join(single)}.'
            if single else '')


COUNTING = (
    'Checkpoint bytes: the file a user ships: the float32 state dict (dense, '
    'FS, KSE with its packed index bits, LRF), tools/quantize.py\'s (FS-WQ), '
    'tools/quantize_int8.py\'s (int8), tools/compress_bsf.py\'s (BSF); each '
    'includes BatchNorm statistics and the zip framing. Effective parameters: '
    'float32-parameter equivalents (WQ and int8: a byte counts 1/4; BSF: '
    'stored bits / 32; KSE: parameters + index bits / 32). GFLOPs: one 300x300 '
    'image through backbone, neck and head, counted by mmengine.analysis as '
    'mmdet\'s get_flops.py counts them (a multiply-add is one; BatchNorm two '
    'per element; building FS, BSF or int8 weights counts nothing, so they '
    'count as the dense convs they run). s / iter: median training '
    'iteration (int8: its dense run\'s; KSE and LRF: their fine-tuning\'s). '
    'Pareto front: no other row has <= its bytes (FLOPs) and a higher mean '
    'mAP.')


def plot_compare(rows: List[dict], key: str, xlabel: str, out: str,
                 title: str) -> None:
    """mAP (mean +- std over seeds) against ``key`` (log x), a colour and a
    marker per method, the points of a method joined in order of x."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    methods = sorted({r['method'] for r in rows}, key=lambda m: (
        _method_rank(m), m))
    for method in methods:
        pts = sorted((r for r in rows if r['method'] == method
                      and r.get(key) is not None), key=lambda r: r[key])
        if not pts:
            continue
        color, marker = METHOD_STYLES.get(method, ('black', 'x'))
        ax.errorbar([p[key] for p in pts], [100 * p['mAP'] for p in pts],
                    yerr=[100 * p['std'] for p in pts], color=color,
                    marker=marker, capsize=3, linewidth=0.8, label=method)
        for p in pts:
            ax.annotate(p['name'], (p[key], 100 * p['mAP']), fontsize=6,
                        xytext=(4, 3), textcoords='offset points')
    ax.set_xscale('log')
    ax.set_xlabel(xlabel)
    ax.set_ylabel('mAP@0.5 (%), demo test split')
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3, which='both')
    ax.legend(fontsize=7, loc='center left', bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    with atomic_path(out) as tmp:
        fig.savefig(tmp, dpi=110, format='png')
    plt.close(fig)


# --------------------------------------------------------------------- main
def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--variants', nargs='+', default=None,
                        choices=sorted(VARIANTS), metavar='NAME',
                        help=f'points to run (default: the main set); '
                        f'allowed: {sorted(VARIANTS)}')
    parser.add_argument('--compare', action='store_true',
                        help='issue 22\'s comparison: FS, FS-WQ, dense and '
                        'thin dense (fp32 and int8), BSF at three sizes, KSE '
                        'and LRF (and LRF in int8); its table and plots go to '
                        'docs/accuracy/compare')
    parser.add_argument('--list', action='store_true',
                        help='print every variant with a one-line '
                        'description and exit')
    parser.add_argument('--seeds', nargs='+', type=int, default=[0, 1, 2])
    parser.add_argument('--iters', type=int, default=None,
                        help='training iterations (default: the demo '
                        "config's, 750)")
    parser.add_argument('--finetune-iters', type=int, default=None,
                        help='KSE / LRF fine-tuning iterations after '
                        'compressing the trained dense model (default: the '
                        "from-trained FS path's, "
                        'configs/demo/fsnet_ssd300_demo_from_dense.py, 250)')
    parser.add_argument('--work-dir', default=None,
                        help='runs (default: work_dirs/bench_accuracy/iters<N>)')
    parser.add_argument('--docs', default=None,
                        help='where the table, json and plot go '
                        '(default: docs/accuracy/iters<N>; with --compare, '
                        'docs/accuracy/compare)')
    parser.add_argument('--data-root', default='data/demo/VOCdevkit')
    parser.add_argument('--report-only', action='store_true',
                        help='train nothing: write the table of the runs '
                        'finished so far')
    parser.add_argument('--quick', action='store_true',
                        help='tiny scale (8 images, 2 iterations, 1 seed, '
                        '3 points; with --compare 6) in a temporary folder: '
                        'for the tests')
    args = parser.parse_args(argv)
    if args.list:
        print(list_text())
        return
    if args.compare and args.variants:
        parser.error('--compare selects its own variants; give --compare or '
                     '--variants, not both')

    from mmengine.config import Config

    from fsnet_mmdet.datasets.synthetic_voc import (SyntheticVOCSpec,
                                                    ensure_dataset)

    start = time.time()
    if args.iters is not None and args.iters < 2:
        parser.error(f'--iters must be >= 2 (warm-up, then decay), got '
                     f'{args.iters}')
    if args.finetune_iters is not None and args.finetune_iters < 2:
        parser.error(f'--finetune-iters must be >= 2 (warm-up, then decay), '
                     f'got {args.finetune_iters}')
    demo_iters = Config.fromfile(DEMO_CONFIG).train_cfg.max_iters
    iters = args.iters or demo_iters
    finetune_iters = args.finetune_iters or Config.fromfile(
        FROM_DENSE_CONFIG).train_cfg.max_iters
    spec = SyntheticVOCSpec()
    names = args.variants or (COMPARE if args.compare else
                              [v.name for v in MAIN])
    if args.quick:
        iters, spec = args.iters or 2, SyntheticVOCSpec(num_trainval=8,
                                                         num_test=4)
        finetune_iters = args.finetune_iters or 2
        args.seeds = args.seeds if '--seeds' in (argv or sys.argv) else [0]
        names = args.variants or (QUICK_COMPARE if args.compare else QUICK)
    if len(set(args.seeds)) != len(args.seeds):
        parser.error(f'--seeds must differ, got {args.seeds}')
    work = os.path.abspath(args.work_dir or os.path.join(
        ROOT, 'work_dirs', 'bench_accuracy' + ('_quick' if args.quick else ''),
        f'iters{iters}'))
    compare_dir = 'compare' + ('' if iters == demo_iters else f'-iters{iters}')
    docs = os.path.abspath(args.docs or (
        os.path.join(work, 'docs-compare' if args.compare else 'docs')
        if args.quick else os.path.join(
            ROOT, 'docs', 'accuracy',
            compare_dir if args.compare else f'iters{iters}')))
    data_root = os.path.abspath(args.data_root if not args.quick else
                                os.path.join(work, 'data'))
    os.makedirs(work, exist_ok=True)
    ensure_dataset(data_root, spec)

    needed = [VARIANTS[n] for n in names]
    needed += [VARIANTS[v.matches] for v in needed
               if v.matches and v.matches not in names]
    variants = resolve([v for v in needed if v.name in names], work, data_root)
    # Points made from another point's trained model after the others.
    variants.sort(key=lambda v: v.source is not None)
    # Seed-major: every point gets its first seed before any gets a second.
    jobs = [(v, s) for s in args.seeds for v in variants]
    finished = [os.path.exists(os.path.join(work, v.name, f'seed{s}',
                                            'result.json')) for v, s in jobs]
    print(f'bench_accuracy: {len(variants)} points x {len(args.seeds)} seeds, '
          f'{iters} iterations each'
          + (f' (KSE / LRF: + {finetune_iters} of fine-tuning)'
             if any(v.compress in FINETUNED for v in variants) else '')
          + f'; runs in {work}', flush=True)
    results, done_s, done_iters = [], 0.0, 0
    for i, ((v, seed), was_done) in enumerate(zip(jobs, finished), 1):
        per_iter = done_s / done_iters if done_iters else None
        left = sum(cost(w, iters, finetune_iters) for (w, _), done in
                   zip(jobs[i - 1:], finished[i - 1:]) if not done)
        eta = f', ETA {per_iter * left / 60:.0f} min' if per_iter else ''
        if args.report_only and not was_done:
            continue
        print(f'[{i}/{len(jobs)}] {v.name} (width {v.widen:g}) seed {seed}'
              f'{" (done, skipped)" if was_done else ""}{eta}', flush=True)
        run_start = time.time()
        result = run_one(v, seed, iters, work, data_root, finetune_iters)
        results.append(result)
        if not was_done:
            done_s += time.time() - run_start
            done_iters += cost(v, iters, finetune_iters)
            print(f'    mAP {result["mAP"]:.3f}'
                  + (f', WQ {result["mAP_wq"]:.3f}' if 'mAP_wq' in result
                     else '')
                  + f', {result["bytes"]:,} bytes, '
                  f'{result["flops"] / 1e9:.3f} GFLOPs, '
                  f'{result["wall_s"] / 60:.1f} min', flush=True)

    rows = summarize(variants, results)
    os.makedirs(docs, exist_ok=True)
    # The command that makes (or resumes) these runs; --report-only only
    # rewrites this table from the finished ones.
    command = 'python benchmarks/bench_accuracy.py ' + ' '.join(
        a for a in (argv if argv is not None else sys.argv[1:])
        if a != '--report-only')
    elapsed = time.time() - start
    runs_s = sum(r.get('wall_s', 0.0) for r in results)
    footer = (f'\n\nCommand: `{command.strip()}`; {iters} training '
              f'iterations of 8 images per run, seeds {args.seeds}; the '
              f'{len(results)} runs took {runs_s / 60:.0f} min of wall time in '
              f'all (train, test, quantize, test; results.json has each run\'s). '
              + ('Table written from the finished runs (--report-only).\n'
                 if args.report_only else
                 f'This invocation: {elapsed / 60:.1f} min (finished runs are '
                 f'skipped).\n'))
    counts = sorted({r['seeds'] for r in rows})
    title = (f'Measured on the demo data: {iters} iterations, batch 8, AdamW;\n'
             f'mean +- std over '
             + ('/'.join(map(str, counts)) if counts else '0') + ' seeds'
             + (' (the table gives each row\'s)' if len(counts) > 1 else ''))
    if args.compare:
        notes = front_notes(rows)
        text = (compare_table(rows) + '\n\n' + (notes + '\n\n' if notes else '')
                + COUNTING + f' KSE and LRF start from the trained dense '
                f'width-0.25 run of the same seed and fine-tune '
                f'{finetune_iters} iterations at the from-trained FS path\'s '
                f'schedule.' + footer)
    else:
        text = table(rows) + footer
    write_text_atomic(os.path.join(docs, 'results.md'), text)
    write_json_atomic(os.path.join(docs, 'results.json'), dict(
        command=command.strip(), iters=iters, seeds=args.seeds,
        finetune_iters=finetune_iters, rows=rows, runs=results))
    if args.compare:
        plot_compare(rows, 'bytes', 'checkpoint bytes (log)',
                     os.path.join(docs, 'map_vs_bytes.png'), title)
        plot_compare(rows, 'flops', 'FLOPs, one 300x300 image (log; '
                     'mmengine.analysis as get_flops.py)',
                     os.path.join(docs, 'map_vs_flops.png'), title)
    else:
        plot(rows, os.path.join(docs, 'params_vs_map.png'), title)
    print('\n' + text)
    print(f'bench_accuracy: wall time {elapsed / 60:.1f} min; table, json and '
          f'plot{"s" if args.compare else ""} in {docs}')


if __name__ == '__main__':
    main()
