"""The detector recipes of configs/demo/ and their FS twins (issue 31)."""
import dataclasses
import importlib.util
import json
import math
import sys

import pytest
import torch
from torch import nn

from conftest import ROOT, build_detector, load_config
from fsnet_mmdet import FSConv, FSLinear, count_params

DEMO = ROOT / 'configs' / 'demo'
#: FS twin -> (dense config, {predictor pattern: interleave}).
TWINS = {
    'fsnet_retinanet_r18_fpn_demo.py': (
        'retinanet_r18_fpn_demo.py',
        {'bbox_head.retina_cls': 6, 'bbox_head.retina_reg': 4}),
    'fsnet_faster-rcnn_r18_fpn_demo.py': (
        'faster-rcnn_r18_fpn_demo.py',
        {'rpn_head.rpn_reg': 4, 'roi_head.bbox_head.fc_reg': 4}),
    'fsnet_rtmdet_tiny_demo.py': ('rtmdet_tiny_demo.py', {}),
}
#: FS twin -> the module-name prefix it leaves dense (docs/detectors.md).
DENSE_PART = {'fsnet_rtmdet_tiny_demo.py': 'bbox_head.'}


def _bench():
    spec = importlib.util.spec_from_file_location(
        'bench_detectors', ROOT / 'benchmarks' / 'bench_detectors.py')
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def _variant_model(tmp_path, detector: str, variant: str, **options):
    """The model of one bench_detectors run config (seed 0, 20 iterations)."""
    bench = _bench()
    path = tmp_path / f'{detector}-{variant}-{len(options)}.py'
    path.write_text(bench.config_text(bench.DETECTORS[detector], variant, 0,
                                      20, str(tmp_path), **options))
    return build_detector(load_config(path))


@pytest.mark.parametrize('twin', sorted(TWINS))
def test_fs_twin_is_the_dense_recipe_with_fs_layers(twin):
    dense_name, interleaved = TWINS[twin]
    dense = build_detector(load_config(DEMO / dense_name))
    fs = build_detector(load_config(DEMO / twin))
    assert count_params(fs).dense == count_params(dense).stored
    assert count_params(fs).stored < count_params(dense).stored / 3
    fs_modules = dict(fs.named_modules())
    for name, module in dense.named_modules():
        if type(module) in (nn.Conv2d, nn.Linear) and getattr(
                module, 'groups', 1) == 1:
            if isinstance(module, nn.Linear) and 'linear' not in str(
                    load_config(DEMO / twin).model.fs_convert):
                continue
            dense_part = name.startswith(DENSE_PART.get(twin, '-'))
            assert isinstance(fs_modules[name], (FSConv, FSLinear)) != \
                dense_part, name
    layers = {n: m for n, m in fs_modules.items()
              if isinstance(m, (FSConv, FSLinear))}
    for name, layer in layers.items():
        g = (layer.geometry.interleave if isinstance(layer, FSConv)
             else layer.interleave)
        assert g == interleaved.get(name, 1), name


def test_init_reaches_the_summaries_and_the_prior_bias_of_fs_retinanet():
    """RetinaHead's init_cfg (Normal std 0.01, bias_prob 0.01 on retina_cls)
    lands on the FS head: extracted filters with std 0.01, the prior bias."""
    torch.manual_seed(0)
    model = build_detector(load_config(DEMO / 'fsnet_retinanet_r18_fpn_demo.py'))
    head = model.bbox_head
    prior = -math.log((1 - 0.01) / 0.01)
    torch.testing.assert_close(head.retina_cls.bias,
                               torch.full_like(head.retina_cls.bias, prior))
    for layer in (head.retina_cls, head.retina_reg, head.cls_convs[0].conv):
        assert isinstance(layer, FSConv)
        std = layer.filters().std().item()
        assert 0.008 < std < 0.012, std  # the summary holds Normal(0, 0.01)
        assert abs(layer.summary.std().item() - 0.01) < 0.002


def test_thin_variant_config_and_results_table(tmp_path):
    bench = _bench()
    det = bench.DETECTORS['retinanet']
    text = bench.config_text(det, 'thin', 1, 20, str(tmp_path), width=0.5)
    path = tmp_path / 'thin.py'
    path.write_text(text)
    cfg = load_config(path)
    assert cfg.model.neck.out_channels == 32
    assert cfg.model.bbox_head.norm_cfg.num_groups == 8  # 4 channels each
    assert cfg.randomness.seed == 1 and cfg.train_cfg.max_iters == 20
    fs = load_config(_write(tmp_path / 'fs.py', bench.config_text(
        det, 'fs-grid', 0, 20, str(tmp_path), wq=True)))
    assert fs.model.fs_convert == dict(predictor_order='grid',
                                       conv=dict(compute='filters', wq=True))
    both = load_config(_write(tmp_path / 'both.py', bench.config_text(
        det, 'fs-nogn-grid', 0, 20, str(tmp_path))))
    assert both.model.fs_convert == dict(predictor_order='grid',
                                         conv=dict(compute='filters'))
    assert both.model.bbox_head.norm_cfg is None
    runs = [dict(detector='retinanet', variant=v, seed=s, iters=20,
                 params=p, mAP=m, s_iter=0.5, **extra)
            for v, s, p, m, extra in (
                ('fs', 0, 10, 0.5, dict(mAP_wq=0.4)),
                ('fs', 1, 10, 0.7, dict(mAP_wq=0.6)),
                ('dense', 0, 80, 0.6, {}))]
    rows = bench.summarize(runs)
    assert [(r['variant'], round(r['mAP'], 3)) for r in rows] == [
        ('dense', 0.6), ('fs', 0.6), ('fs-wq', 0.5)]
    assert abs(rows[1]['std'] - 0.1414) < 1e-3
    assert '| retinanet | FS (fs_convert), WQ | 10 | 20 | 0.50 | 0.500 +- ' \
        '0.141 | 2 (0.400, 0.600) |' in bench.table(rows)


def _write(path, text):
    path.write_text(text)
    return path


def test_readme_and_docs_tables_are_the_benchmarks_results():
    """The README's and docs/detectors.md's rows are lines of
    docs/accuracy/detectors/results.md, which is the benchmark's table of the
    runs in its results.json (every run naming detector, variant, seed, mAP)."""
    import json
    bench = _bench()
    docs = ROOT / 'docs' / 'accuracy' / 'detectors'
    runs = json.loads((docs / 'results.json').read_text())['runs']
    assert runs and all({'detector', 'variant', 'seed', 'mAP'} <= set(r)
                        for r in runs)
    table = bench.table(bench.summarize(runs))
    assert table in (docs / 'results.md').read_text()
    lines = set(table.splitlines())
    detectors = tuple(f'| {d} |' for d in bench.DETECTORS)
    for page in ('README.md', 'docs/detectors.md'):
        rows = [line for line in (ROOT / page).read_text().splitlines()
                if line.startswith(detectors)]
        assert rows, page
        assert all(row in lines for row in rows), page


@pytest.mark.parametrize('part', ['backbone', 'neck', 'bbox_head'])
def test_one_part_left_dense_variants(tmp_path, part):
    """bench_detectors' fs-dense-<part>: that part keeps every plain conv,
    the others are FS as in the fs variant."""
    bench = _bench()
    variant = 'fs-dense-' + ('head' if part == 'bbox_head' else part)
    text = bench.config_text(bench.DETECTORS['retinanet'], variant, 0, 20,
                             str(tmp_path))
    path = tmp_path / 'variant.py'
    path.write_text(text)
    model = build_detector(load_config(path))
    convs = {n: m for n, m in model.named_modules() if isinstance(m, nn.Conv2d)}
    assert convs and all(isinstance(m, FSConv) != n.startswith(part + '.')
                         for n, m in convs.items())


@pytest.mark.parametrize('detector', ['retinanet', 'rtmdet', 'faster-rcnn'])
def test_dense_cls_variant_keeps_exactly_the_classification_predictors(
        tmp_path, detector):
    bench = _bench()
    det = bench.DETECTORS[detector]
    path = tmp_path / 'variant.py'
    path.write_text(bench.config_text(det, 'fs-dense-cls', 0, 20, str(tmp_path)))
    model = build_detector(load_config(path))
    dense = sorted(n for n, m in model.named_modules()
                   if type(m) in (nn.Conv2d, nn.Linear)
                   and getattr(m, 'groups', 1) == 1)
    expected = {'retinanet': ['bbox_head.retina_cls'],
                'rtmdet': [f'bbox_head.rtm_cls.{i}' for i in range(3)],
                'faster-rcnn': ['roi_head.bbox_head.fc_cls', 'rpn_head.rpn_cls']}
    assert dense == expected[detector]


def test_head_half_variant_halves_only_the_head_towers_compression(tmp_path):
    """bench_detectors' fs-head-half: the head's 3x3 summaries twice the fs
    variant's (K3 halved, Eq. 1); every other summary the same."""
    summaries = {}
    for variant in ('fs', 'fs-head-half'):
        model = _variant_model(tmp_path, 'rtmdet', variant)
        summaries[variant] = {n: m.summary.numel() for n, m in
                              model.named_modules() if isinstance(m, FSConv)}
    fs, half = summaries['fs'], summaries['fs-head-half']
    assert fs.keys() == half.keys()
    towers = [n for n in fs if n.startswith('bbox_head.')
              and '_convs.' in n]
    assert towers
    for name in fs:
        assert half[name] == (2 * fs[name] if name in towers else fs[name]), name


def test_thin_of_dense_head_matches_that_variants_parameters(tmp_path,
                                                              monkeypatch):
    """thin-dense-head: the width whose dense model stores about as many
    parameters as FS with the head left dense, cached apart from thin's.
    Counts are stand-ins (real ones build a model per bisection step: slow):
    the FS variants count 140,000 and 310,000, a thin model 10^6 w^2, so the
    width to find is sqrt(0.31)."""
    bench = _bench()
    det = dataclasses.replace(bench.DETECTORS['retinanet'],
                              width=lambda w: f'# width {w!r}\n')
    targets = {bench.VARIANTS['fs'][0]: 140_000,
               bench.VARIANTS['fs-dense-head'][0]: 310_000}

    def stored_params(config):
        text = open(config).read()
        if '# width ' in text:
            return round(1e6 * float(text.split('# width ')[1].split()[0]) ** 2)
        label = text.split(f'{det.name}, ', 1)[1].split(', seed')[0]
        return targets[label]

    monkeypatch.setattr(bench, 'stored_params', stored_params)
    width = bench.thin_width(det, str(tmp_path), str(tmp_path),
                             'thin-dense-head')
    cache = json.loads((tmp_path / 'retinanet' /
                        'thin_width_fs-dense-head.json').read_text())
    assert cache['target'] == 310_000 and cache['width'] == width
    assert abs(width - 0.31 ** 0.5) < 0.005
    assert not (tmp_path / 'retinanet' / 'thin_width.json').exists()
    assert bench.thin_width(det, str(tmp_path), str(tmp_path)) != width
    assert json.loads((tmp_path / 'retinanet' / 'thin_width.json'
                       ).read_text())['target'] == 140_000


def test_speed_refuses_a_variant_that_is_not_fs(tmp_path):
    """--speed times FS variants against dense: a dense or thin variant is a
    clear error naming the allowed ones, before any model is built."""
    bench = _bench()
    with pytest.raises(SystemExit, match=r"--speed --variants: \['thin'\] are "
                       r"not FS variants; allowed: \['fs', 'fs-grid'"):
        bench.speed(['retinanet'], str(tmp_path), 1, str(tmp_path / 'docs'),
                    variants=('fs', 'thin'))
    assert not (tmp_path / 'docs').exists()


def test_iou10_variant_changes_only_the_assigners_iou_weight(tmp_path):
    """bench_detectors' fs-iou10 (RTMDet): the fs variant's model with the
    DynamicSoftLabelAssigner's IoU cost weighted 10 instead of mmdet's 3."""
    models = {v: _variant_model(tmp_path, 'rtmdet', v) for v in ('fs', 'fs-iou10')}
    fs, iou10 = models['fs'].bbox_head.assigner, models['fs-iou10'].bbox_head.assigner
    assert (fs.iou_weight, iou10.iou_weight) == (3.0, 10.0)
    assert (fs.topk, fs.soft_center_radius) == (iou10.topk, iou10.soft_center_radius)
    assert ({n: m.summary.shape for n, m in models['fs'].named_modules()
             if isinstance(m, FSConv)}
            == {n: m.summary.shape for n, m in models['fs-iou10'].named_modules()
                if isinstance(m, FSConv)})


@pytest.mark.parametrize('score, iou_weight, chosen', [
    (0.01, 3.0, 1), (0.01, 10.0, 0), (0.1, 3.0, 0)])
def test_rtmdet_assigner_prefers_the_worse_box_while_scores_are_low(
        score, iou_weight, chosen):
    """The mechanism fs-iou10 tests (docs/detectors.md), on mmdet's own
    DynamicSoftLabelAssigner: two priors at the box's centre, predicting
    boxes of IoU 0.81 and 0.49 with it. With every class score at 0.01 (the
    classifier's prior init, or a stalled classifier) and mmdet's IoU weight
    3 the 0.49 box gets the object; with weight 10, or scores at 0.1, the
    0.81 box does."""
    from mmengine.structures import InstanceData
    from mmdet.models.task_modules.assigners import DynamicSoftLabelAssigner

    gt = InstanceData(bboxes=torch.tensor([[0., 0., 100., 100.]]),
                      labels=torch.tensor([0]))
    logit = float(torch.logit(torch.tensor(score)))
    pred = InstanceData(priors=torch.tensor([[50., 50., 8., 8.]] * 2),
                        bboxes=torch.tensor([[5., 5., 95., 95.],
                                             [15., 15., 85., 85.]]),
                        scores=torch.full((2, 5), logit))
    result = DynamicSoftLabelAssigner(topk=13, iou_weight=iou_weight).assign(pred, gt)
    expected = [0, 0]
    expected[chosen] = 1  # the one prior the object goes to (dynamic k = 1)
    assert result.gt_inds.tolist() == expected


def test_runs_keep_the_filters_path_and_speed_times_the_default(tmp_path):
    """bench_detectors' training runs build every FSConv with
    compute='filters' (RUN_COMPUTE: the path of the committed runs); the
    --speed configs with FSConv's default, 'auto'."""
    for compute, options in (('filters', {}), ('auto', dict(compute='auto'))):
        layers = [m for m in _variant_model(tmp_path, 'faster-rcnn', 'fs',
                                            **options).modules()
                  if isinstance(m, FSConv)]
        assert layers and {m.compute for m in layers} == {compute}
