"""ONNX export that keeps the summaries (fp32 and WQ), onnxruntime inference.

References: the layers' own ``index`` (``index.filter_index`` /
``segment_index``), the PyTorch model's raw head outputs, mmdet's
``inference_detector`` and the plugin's WQ model; the graph is walked with
the ``onnx`` package.
"""
import copy
import json
import os
import sys
import warnings

import pytest
import torch

onnx = pytest.importorskip('onnx')
ort = pytest.importorskip('onnxruntime')

import onnx.inliner  # noqa: E402
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from conftest import (ROOT, TINY_CONFIG, VOC_ROOT,  # noqa: E402
                      build_detector, load_config, run_tool, voc_batch)
from fsnet_mmdet import FSConv, FSLinear  # noqa: E402
from fsnet_mmdet.conversion import fs_layers  # noqa: E402
from fsnet_mmdet.deploy import onnx_export as ox  # noqa: E402
from fsnet_mmdet.deploy import weight_functions as wf  # noqa: E402
from fsnet_mmdet.deploy.ort_inference import OrtDetector, ort_session  # noqa: E402
from fsnet_mmdet.layers.wq import (compress_state_dict, dequantize,  # noqa: E402
                                   quantize)
from fsnet_mmdet.utils.io import unpack_tensors  # noqa: E402
from fsnet_mmdet.engine.checkpoint import load_into  # noqa: E402
from fsnet_mmdet.tools import export_onnx as tool  # noqa: E402

DENSE_CONFIG = ROOT / 'tests' / 'configs' / 'ssd300_bn_tiny.py'
DEMO_CONFIG = ROOT / 'configs' / 'demo' / 'fsnet_ssd300_demo.py'
DEMO_WQ_CONFIG = ROOT / 'configs' / 'demo' / 'fsnet_ssd300_demo_wq.py'
IMAGES = [str(VOC_ROOT / year / 'JPEGImages' / '000001.jpg')
          for year in ('VOC2007', 'VOC2012')]
LEVELS = ('disabled', 'all')


def _quiet():
    from mmengine.logging import MMLogger
    MMLogger.get_current_instance().setLevel('WARNING')


def _randomize(model, background, seed=0):
    """Random BN statistics, and class scores that leave 5-199 detections.

    Random weights give huge logits (every score ~1.0, 200 near-ties at the
    ``max_per_img`` cut); scaling the class predictors and setting the
    background logit (``background``, per model) leaves a few dozen to a
    hundred detections per image above the score threshold, no cut, so the
    detection comparisons test the outputs, not tie-breaking.
    """
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.1, generator=g)
                m.running_var.uniform_(0.5, 2.0, generator=g)
                m.weight.uniform_(0.5, 1.5, generator=g)
                m.bias.normal_(0, 0.1, generator=g)
        head = model.bbox_head
        for branch in head.cls_convs:
            branch[-1].summary.mul_(0.3)
            branch[-1].bias.view(-1, head.cls_out_channels)[:, -1] = background
    return model.eval()


def _build(config, background):
    """A config's detector with random weights: its init_cfg, then
    :func:`_randomize` (seeded)."""
    _quiet()
    torch.manual_seed(0)
    return _randomize(build_detector(load_config(config)), background)


@pytest.fixture(scope='module')
def fs_model():
    """The tiny FSNet-1 config's model (full width) with random weights."""
    return _build(TINY_CONFIG, background=11.0)


@pytest.fixture(scope='module')
def checkpoint(fs_model, tmp_path_factory):
    path = tmp_path_factory.mktemp('ckpt') / 'random_fsnet1.pth'
    torch.save({'state_dict': fs_model.state_dict(), 'meta': {}}, path)
    return path


@pytest.fixture(scope='module')
def fs_onnx(fs_model, tmp_path_factory):
    path = tmp_path_factory.mktemp('fs') / 'fsnet1.onnx'
    report = ox.export_onnx(fs_model, str(path))
    assert report.functions == ['Grid'] and report.bytes == path.stat().st_size
    return path


@pytest.fixture(scope='module')
def demo_model():
    """The demo's FS model (width 0.25, 6 classes) with random weights."""
    return _build(DEMO_CONFIG, background=13.0)


@pytest.fixture(scope='module')
def demo_checkpoint(demo_model, tmp_path_factory):
    path = tmp_path_factory.mktemp('demo') / 'random_demo.pth'
    classes = tuple(load_config(DEMO_CONFIG).metainfo['classes'])
    torch.save({'state_dict': demo_model.state_dict(),
                'meta': {'dataset_meta': {'classes': classes}}}, path)
    return path


@pytest.fixture(scope='module')
def voc_inputs():
    """The two shared VOC images through the config's test pipeline and
    data preprocessor: (2, 3, 300, 300)."""
    from mmdet.registry import MODELS

    cfg = load_config(TINY_CONFIG)
    preprocessor = MODELS.build(cfg.model.data_preprocessor)
    return preprocessor(voc_batch(cfg.test_pipeline), False)['inputs']


def _raw(model, inputs):
    with torch.no_grad():
        return [t for group in model.eval()._forward(inputs) for t in group]


def _run(path, inputs, level):
    session = ort_session(str(path), level)
    return [torch.from_numpy(o)
            for o in session.run(None, {'inputs': inputs.numpy()})]


# ------------------------------------------------------------ index programs
def _dfs_moved(layer):
    """A DFSNet layer discretized at random candidate locations."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        layer.dfs_logits.copy_(torch.randn(layer.dfs_logits.shape, generator=g))
    layer.discretize()
    assert layer.moved_filters() > 0
    return layer


LAYERS = {
    'grid 3x3': lambda: FSConv(64, 128, 3, padding=1),
    'grid fsnet1 predictor, interleave': lambda: FSConv(
        512, 84, 3, padding=1, preset='fsnet1', interleave=21),
    'grid 1x1': lambda: FSConv(48, 40, 1),
    'grid C=3, dilation': lambda: FSConv(3, 16, 3, padding=2, dilation=2),
    'segment conv': lambda: FSConv(16, 24, 3, layout='1d', interleave=4),
    'segment linear': lambda: FSLinear(40, 12),
    'segment linear, interleave': lambda: FSLinear(40, 12, interleave=4),
    'block DFSNet conv': lambda: _dfs_moved(FSConv(32, 16, 3, dfs_radius=1)),
    'block DFSNet linear': lambda: _dfs_moved(FSLinear(24, 10, dfs_radius=2)),
}
PROGRAMS = {'grid': 'Grid', 'segment': 'Segment', 'block': 'Block'}


@pytest.mark.parametrize('kind', list(LAYERS))
def test_program_rebuilds_the_layers_index(kind):
    layer = LAYERS[kind]()
    program = wf.weight_program(layer)
    assert program.op == PROGRAMS[kind.split()[0]]
    assert torch.equal(program.index(layer.summary.shape), layer.index.long())
    if program.op == 'Block':  # the one table that grows with K, int16
        assert program.starts.dtype == torch.int16
        assert tuple(program.starts.shape) == (layer.index.shape[0],
                                               layer.summary.dim())


def _function_model(layer, wq):
    """A one-node ONNX model: the layer's weight function, output W."""
    program = wf.weight_program(layer)
    summary = layer.summary.detach()
    if wq:
        codes, lo, hi = quantize(summary)
        source, reference = codes, dequantize(codes, lo, hi)
    else:
        source, reference = summary, summary
    name = wf.function_name(program.op, wq, summary.dim())
    inits = [numpy_helper.from_array(source.numpy(), 'M')]
    inputs = ['M']
    if program.starts is not None:
        inits.append(numpy_helper.from_array(program.starts.numpy(), 'P'))
        inputs.append('P')
    if wq:
        inits.append(numpy_helper.from_array(wf.wq_levels(lo, hi).numpy(), 'R'))
        inputs.append('R')
    attrs = wf.node_attributes(program)
    node = helper.make_node(name, inputs, ['W'], domain=wf.DOMAIN, **attrs)
    graph = helper.make_graph(
        [node], 'weight', [],
        [helper.make_tensor_value_info('W', TensorProto.FLOAT,
                                       list(layer.index.shape))], inits)
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid('', wf.DEFAULT_OPSET),
                              helper.make_opsetid(wf.DOMAIN, 1)],
        functions=[wf.weight_function(program.op, wq, summary.dim())])
    onnx.checker.check_model(model)
    expected = reference.reshape(-1)[layer.index.long()]
    return model.SerializeToString(), expected


@pytest.mark.parametrize('wq', [False, True], ids=['fp32', 'wq'])
@pytest.mark.parametrize('kind', list(LAYERS))
def test_weight_function_in_onnxruntime_equals_layer_weight(kind, wq):
    layer = LAYERS[kind]()
    model, expected = _function_model(layer, wq)
    for level in LEVELS:
        options = ort.SessionOptions()
        options.graph_optimization_level = getattr(
            ort.GraphOptimizationLevel,
            'ORT_DISABLE_ALL' if level == 'disabled' else 'ORT_ENABLE_ALL')
        session = ort.InferenceSession(model, options,
                                       providers=['CPUExecutionProvider'])
        weight = torch.from_numpy(session.run(None, {})[0])
        assert weight.shape == layer.index.shape
        assert torch.equal(weight, expected)  # WQ too: dequantized in float64


def test_block_starts_refuses_an_index_that_is_not_blocks():
    layer = FSConv(8, 4, 3)
    index = layer.index.clone()
    index[2, 0, 1, 1] += 1  # one element off its block
    with pytest.raises(ValueError, match='filter 2 is not a block'):
        wf.block_starts(index, layer.summary.shape)


def test_searching_dfsnet_layer_refused():
    with pytest.raises(ValueError, match='discretize'):
        wf.weight_program(FSConv(8, 4, 3, dfs_radius=1))


def test_bad_mode_and_shape_refused(fs_model, tmp_path):
    with pytest.raises(ValueError, match="mode must be one of"):
        ox.export_onnx(fs_model, str(tmp_path / 'a.onnx'), mode='int8')
    with pytest.raises(ValueError, match='input_shape'):
        ox.export_onnx(fs_model, str(tmp_path / 'a.onnx'), input_shape=(3, 300))
    assert os.listdir(tmp_path) == []


# ------------------------------------------------------------- the graph
def _producers(graph):
    return {out: node for node in graph.node for out in node.output}


def _ancestor_initializers(graph, value, inits, producers):
    """Initializers that ``value`` is computed from (walking back)."""
    found, stack, seen = set(), [value], set()
    while stack:
        name = stack.pop()
        if name in seen:
            continue
        seen.add(name)
        if name in inits:
            found.add(name)
        elif name in producers:
            stack.extend(producers[name].input)
    return found


def _summary_of_each_conv(graph, convs, inits, producers) -> set:
    """The summaries the convs' weights are computed from: each conv's
    weight is no initializer and descends from exactly one summary."""
    summaries = set()
    for conv in convs:
        assert conv.input[1] not in inits
        sources = {s for s in _ancestor_initializers(graph, conv.input[1],
                                                     inits, producers)
                   if s.endswith('.summary')}
        assert len(sources) == 1, conv.name
        summaries |= sources
    return summaries


def test_graph_holds_summaries_not_weights(fs_onnx, fs_model):
    proto = onnx.load(str(fs_onnx))
    graph = proto.graph
    inits = {t.name: numpy_helper.to_array(t).copy() for t in graph.initializer}
    layers = {name: fs_model.get_submodule(name) for name in fs_layers(fs_model)}
    dense_shapes = {tuple(layer.index.shape) for layer in layers.values()}
    # No initializer is a full-size weight of an FS layer or larger than
    # the largest summary; all of them hold fewer elements than the model.
    largest_summary = max(layer.summary.numel() for layer in layers.values())
    for name, value in inits.items():
        assert tuple(value.shape) not in dense_shapes, name
        assert value.size <= largest_summary, name
    stored = sum(p.numel() for p in fs_model.state_dict().values())
    assert sum(v.size for v in inits.values()) < stored
    # Every summary is stored as itself, under the layer's name.
    for name, layer in layers.items():
        stored = inits[f'{name}.summary']
        assert torch.equal(torch.from_numpy(stored), layer.summary.detach())
    # Every Conv's weight is computed, from exactly one summary.
    producers = _producers(graph)
    convs = [n for n in graph.node if n.op_type == 'Conv']
    assert len(convs) == len(layers) == 35
    summaries = _summary_of_each_conv(graph, convs, inits, producers)
    assert summaries == {f'{name}.summary' for name in layers}
    functions = {f.name for f in proto.functions}
    assert functions == {'Grid'}
    assert sum(n.domain == wf.DOMAIN for n in graph.node) == 35
    # The inlined graph (what a runtime without ONNX functions runs) is
    # the same network: still no dense weight stored.
    inlined = onnx.inliner.inline_local_functions(proto)
    assert not inlined.functions and not any(n.domain for n in inlined.graph.node)
    assert len(inlined.graph.initializer) == len(graph.initializer)


@pytest.fixture(scope='module')
def fs_detector(fs_onnx):
    """The FSNet-1 graph in onnxruntime (all optimizations), with mmdet's
    pipeline and post-processing."""
    return OrtDetector(str(TINY_CONFIG), str(fs_onnx))


@pytest.mark.parametrize('level', LEVELS)
def test_raw_outputs_match_pytorch(fs_onnx, fs_detector, fs_model, voc_inputs,
                                   level):
    if level == 'all':
        inputs = voc_inputs
        outputs = [t for group in fs_detector.raw(inputs) for t in group]
    else:  # unoptimized, the graph recomputes every index per run: one image
        inputs = voc_inputs[:1]
        outputs = _run(fs_onnx, inputs, level)
    expected = _raw(fs_model, inputs)
    assert len(outputs) == len(expected) == 12
    for got, want in zip(outputs, expected):
        assert got.shape == want.shape
        torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-3)


def _iou(a, b):
    lt, rb = torch.max(a[:, :2], b[:, :2]), torch.min(a[:, 2:], b[:, 2:])
    inter = (rb - lt).clamp(min=0).prod(1)
    area = lambda x: (x[:, 2:] - x[:, :2]).prod(1)  # noqa: E731
    return inter / (area(a) + area(b) - inter)


def _same_detections(got, want):
    """Same detections in the same order: same labels, scores within 1e-3,
    boxes IoU > 0.99 (``got``: lists or tensors of bboxes, scores, labels)."""
    bboxes, scores, labels = (torch.as_tensor(v) for v in got)
    assert 5 <= len(want.scores) < 200  # some detections, no max_per_img cut
    assert len(scores) == len(want.scores)
    assert labels.tolist() == want.labels.tolist()
    assert (scores - want.scores).abs().max() < 1e-3
    assert _iou(bboxes, want.bboxes).min() > 0.99


def test_detections_match_mmdet_inference(fs_detector, fs_model):
    """OrtDetector against mmdet's ``inference_detector`` on the PyTorch
    model, on the shared VOC images."""
    from mmdet.apis import inference_detector

    fs_model.cfg = load_config(TINY_CONFIG)  # what init_detector attaches
    expected = inference_detector(fs_model, IMAGES)
    for sample, want in zip(fs_detector(IMAGES), expected):
        pred = sample.pred_instances
        _same_detections((pred.bboxes, pred.scores, pred.labels),
                         want.pred_instances)
        assert sample.ori_shape == want.ori_shape


# ------------------------------------------------------------------- WQ
@pytest.fixture(scope='module')
def wq_onnx(demo_model, tmp_path_factory):
    path = tmp_path_factory.mktemp('wq') / 'demo_wq.onnx'
    report = ox.export_onnx(demo_model, str(path), mode='wq')
    assert report.functions == ['GridQ'] and report.bytes == path.stat().st_size
    return path


@pytest.fixture(scope='module')
def plugin_wq_outputs(demo_checkpoint, voc_inputs):
    """Raw outputs of the plugin's WQ model: the demo's WQ config
    (FSConv(wq=True)) with the float checkpoint, quantized on load."""
    plugin = build_detector(load_config(DEMO_WQ_CONFIG))
    load_into(plugin, str(demo_checkpoint))
    assert all(plugin.get_submodule(n).wq for n in fs_layers(plugin))
    return _raw(plugin, voc_inputs)


@pytest.mark.parametrize('level', LEVELS)
def test_wq_export_matches_the_plugins_wq_model(wq_onnx, plugin_wq_outputs,
                                                voc_inputs, level):
    outputs = _run(wq_onnx, voc_inputs, level)
    assert len(outputs) == len(plugin_wq_outputs) == 12
    for got, want in zip(outputs, plugin_wq_outputs):
        torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-3)


def test_wq_detections_of_the_command_line(wq_onnx, demo_checkpoint,
                                          tmp_path):
    """``python -m fsnet_mmdet.deploy.ort_inference`` on the WQ graph against
    ``inference_detector`` on the plugin's WQ model (``init_detector``)."""
    from mmdet.apis import inference_detector, init_detector
    from fsnet_mmdet.deploy import ort_inference

    plugin = init_detector(str(DEMO_WQ_CONFIG), str(demo_checkpoint),
                           device='cpu')
    expected = inference_detector(plugin, IMAGES)
    out = tmp_path / 'detections.json'
    ort_inference.main([str(DEMO_WQ_CONFIG), str(wq_onnx), *IMAGES, '--out',
                        str(out)])
    rows = json.loads(out.read_text())
    assert [r['image'] for r in rows] == IMAGES
    for row, want in zip(rows, expected):
        _same_detections((row['bboxes'], row['scores'], row['labels']),
                         want.pred_instances)
        assert set(row['classes']) <= {'circle', 'square', 'triangle',
                                       'cross', 'ring', 'star'}


def test_wq_export_stores_the_compressed_checkpoints_codes(wq_onnx, demo_model):
    names = fs_layers(demo_model)
    packed = compress_state_dict(demo_model.state_dict(),
                                 [f'{n}.summary' for n in names], {})
    codes = unpack_tensors(packed['packed'])
    graph = onnx.load(str(wq_onnx)).graph
    inits = {t.name: numpy_helper.to_array(t).copy() for t in graph.initializer}
    for name in names:
        assert f'{name}.summary' not in inits
        stored = torch.from_numpy(inits[f'{name}.codes'])
        assert stored.dtype == torch.uint8
        assert torch.equal(stored, codes[f'{name}.summary'])
    largest_vector = max(m.out_channels for m in demo_model.modules()
                         if isinstance(m, torch.nn.Conv2d))
    assert all(v.dtype == 'uint8' or v.size <= largest_vector
               for v in inits.values())  # fp32: scales and biases only


# ------------------------------------------------------ summary compute
def _initializer_bytes(proto):
    return sum(numpy_helper.to_array(t).nbytes for t in proto.graph.initializer)


def _taps(layer):
    return layer.kernel_size[0] * layer.kernel_size[1]


def _made_by_weight_function(value, producers) -> bool:
    """Whether an fsnet node is among the nodes ``value`` is computed by."""
    stack, seen = [value], set()
    while stack:
        node = producers.get(stack.pop())
        if node is None or id(node) in seen:
            continue
        if node.domain == wf.DOMAIN:
            return True
        seen.add(id(node))
        stack.extend(node.input)
    return False


#: The demo model's FSConvs that run fewer operations from the summary at
#: 300 x 300: every 3x3 stride-1 conv of the backbone and the head.
FEWER_OPS = ([f'backbone.features.conv{b}_{i}.conv' for b, n in
              ((1, 2), (2, 2), (3, 3), (4, 3), (5, 3)) for i in range(1, n + 1)]
             + ['backbone.features.fc6.conv']
             + [f'bbox_head.{kind}_convs.{level}.0' for kind in ('cls', 'reg')
                for level in range(6)])


@pytest.fixture(scope='module')
def summary_export(demo_model, tmp_path_factory):
    """The demo's FS model in mode 'summary': (path, report)."""
    path = tmp_path_factory.mktemp('summary') / 'demo_summary.onnx'
    report = ox.export_onnx(demo_model, str(path), mode='summary')
    assert report.bytes == path.stat().st_size
    return path, report


@pytest.fixture(scope='module')
def demo_fs_onnx(demo_model, tmp_path_factory):
    path = tmp_path_factory.mktemp('demo_fs') / 'demo_fs.onnx'
    ox.export_onnx(demo_model, str(path), mode='fs')
    return path


@pytest.mark.parametrize('level', LEVELS)
def test_summary_export_matches_pytorch(summary_export, demo_model,
                                        voc_inputs, level):
    outputs = _run(summary_export[0], voc_inputs, level)
    expected = _raw(demo_model, voc_inputs)
    assert len(outputs) == len(expected) == 12
    for got, want in zip(outputs, expected):
        assert got.shape == want.shape
        torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-3)


def test_summary_export_computes_from_summaries_in_standard_ops(
        summary_export, demo_model):
    """The default export (``summary_layers='fewer-ops'``): each FEWER_OPS
    conv is computed from its summary in standard ops (one 1x1 Conv, stage 1,
    whose weight comes from exactly that layer's summary; one Slice per tap
    and the circular extensions); the other nine FS layers keep their
    weight function (a Conv of their own kernel whose weight an fsnet node
    makes); no dense weight stored, no BatchNorm left."""
    path, report = summary_export
    proto = onnx.load(str(path))
    graph = proto.graph
    layers = {name: demo_model.get_submodule(name)
              for name in fs_layers(demo_model)}
    assert report.mode == 'summary' and report.functions
    assert (report.summary_compute, report.fs_layers, len(layers)) == (
        len(FEWER_OPS), 35, 35)
    assert sum(n.domain == wf.DOMAIN for n in graph.node) == 35 - len(FEWER_OPS)
    assert not {n.op_type for n in graph.node} & {'BatchNormalization'}
    meta = {p.key: p.value for p in proto.metadata_props}
    assert meta[ox.META_MODE] == 'summary'
    inits = {t.name: numpy_helper.to_array(t).copy() for t in graph.initializer}
    for name, layer in layers.items():
        assert torch.equal(torch.from_numpy(inits[f'{name}.summary']),
                           layer.summary.detach())
    dense_shapes = {tuple(layer.index.shape) for layer in layers.values()}
    assert not any(tuple(v.shape) in dense_shapes for v in inits.values())
    producers = _producers(graph)
    convs = [n for n in graph.node if n.op_type == 'Conv']
    assert len(convs) == len(layers)
    for conv in convs:
        (summary, ) = _summary_of_each_conv(graph, [conv], inits, producers)
        name = summary[:-len('.summary')]
        kernel = [a for a in conv.attribute if a.name == 'kernel_shape'][0]
        if name in FEWER_OPS:
            assert list(kernel.ints) == [1, 1], name  # stage 1
        else:
            assert list(kernel.ints) == list(layers[name].kernel_size), name
            assert _made_by_weight_function(conv.input[1], producers), name
    # tidy_graph: no shape arithmetic on constants left, one Slice per tap
    # (+ at most the stage-1 slice and the two circular extensions a layer).
    constants = {n.output[0] for n in graph.node if n.op_type == 'Constant'}
    assert not [n for n in graph.node if n.op_type in ox.FOLDABLE_OPS
                and set(n.input) <= constants]
    slices = sum(n.op_type == 'Slice' for n in graph.node)
    assert slices <= sum(_taps(layers[name]) + 3 for name in FEWER_OPS)


def test_summary_export_stores_the_summaries_not_more(summary_export,
                                                      demo_fs_onnx):
    """Initializer bytes within 1.10 x the 'fs' export's (the summaries,
    BN-folded scales and biases: the same tensors), the file too."""
    summary, fs = onnx.load(str(summary_export[0])), onnx.load(str(demo_fs_onnx))
    assert _initializer_bytes(summary) <= 1.10 * _initializer_bytes(fs)
    assert summary_export[0].stat().st_size <= 1.10 * demo_fs_onnx.stat().st_size
    constants = sum(numpy_helper.to_array(a.t).nbytes for n in summary.graph.node
                    if n.op_type == 'Constant' for a in n.attribute)
    assert constants <= 0.02 * _initializer_bytes(summary)  # no hidden table


def _mixed_demo(demo_model):
    """The demo model with two head convs that cannot compute from their
    summaries: one of the 1D layout, one with DFSNet-moved filters."""
    mixed = copy.deepcopy(demo_model)
    torch.manual_seed(2)
    for name, make in (('bbox_head.reg_convs.5.0', lambda c: FSConv(
            c.in_channels, c.out_channels, 3, padding=1, layout='1d')),
                       ('bbox_head.reg_convs.4.0', lambda c: _dfs_moved(FSConv(
                           c.in_channels, c.out_channels, 3, padding=1,
                           dfs_radius=1)))):
        mixed.set_submodule(name, make(mixed.get_submodule(name)).eval())
    return mixed.eval()


def test_summary_mode_falls_back_to_the_weight_function(demo_model, voc_inputs,
                                                        tmp_path):
    mixed = _mixed_demo(demo_model)
    twins = {name: type(module).__name__ for name, module in
             ox.exportable(mixed, 'summary', summary_layers='all'
                           ).detector.named_modules()
             if isinstance(module, (ox.SummaryTwin, ox.SummaryComputeTwin))}
    assert twins.pop('bbox_head.reg_convs.5.0') == 'SummaryTwin'
    assert twins.pop('bbox_head.reg_convs.4.0') == 'SummaryTwin'
    assert set(twins.values()) == {'SummaryComputeTwin'} and len(twins) == 33
    path = tmp_path / 'mixed.onnx'
    report = ox.export_onnx(mixed, str(path), mode='summary',
                            summary_layers='all')
    assert report.functions == ['Block3', 'Segment']
    assert report.summary_compute == 33 and report.fs_layers == 35
    graph = onnx.load(str(path)).graph
    assert sorted(n.op_type for n in graph.node if n.domain) == ['Block3', 'Segment']
    for got, want in zip(_run(path, voc_inputs, 'all'), _raw(mixed, voc_inputs)):
        torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-3)


def test_summary_layers_fewer_ops_picks_by_operation_count(demo_model):
    """1x1 convs (stage 1 alone costs the dense conv's C K) and stride-2
    convs (stage 1 at every input position: 4x the outputs) keep their
    weight function, and so do the two unpadded 3x3 extra layers, whose
    stage 1 runs on more input positions than they have outputs; by hand
    for the last one (3 x 3 input, one output pixel)."""
    chosen = ox.summary_compute_layers(demo_model, (1, 3, 300, 300))
    assert chosen == FEWER_OPS
    layer = demo_model.get_submodule('neck.extra_layers.3.1.conv')
    assert (layer.kernel_size, layer.stride, layer.padding) == ((3, 3), (1, 1),
                                                                (0, 0))
    k, x, y = layer.out_channels, *layer.geometry.strides[:2]
    dense = layer.in_channels * 9 * k * 1  # one output pixel
    summary = layer.in_channels * k * x * y * 9 + 9 * k  # 9 input positions
    assert summary > dense


def test_summary_layers_must_be_known(demo_model, tmp_path):
    with pytest.raises(ValueError, match=r"summary_layers must be one of "
                       r"\('fewer-ops', 'all'\), got 'some'"):
        ox.export_onnx(demo_model, str(tmp_path / 'x.onnx'), mode='summary',
                       summary_layers='some')
    assert os.listdir(tmp_path) == []


#: (kernel, stride, padding, dilation, padding_mode, FS options) of single
#: convs exported alone: what the demo model does not hold.
TWIN_CASES = [
    (3, 1, 1, 1, 'zeros', {'interleave': 4}),
    (3, 2, 1, 1, 'zeros', {}),
    (5, 2, 2, 1, 'reflect', {'sampling': (2, 5, 2)}),
    (3, 1, 2, 2, 'circular', {'strides': (1, 3, 4)}),
    (3, 1, 'same', 2, 'replicate', {'interleave': 4}),
    (5, 1, 0, 2, 'zeros', {'sampling': (2, 5, 2), 'interleave': 5}),
]


@pytest.mark.parametrize('with_norm', [False, True], ids=['conv', 'conv+bn'])
@pytest.mark.parametrize('case', TWIN_CASES, ids=str)
def test_summary_compute_twin_in_onnxruntime(case, with_norm, tmp_path):
    """One FSConv (and its BatchNorm, folded) as SummaryComputeTwin, exported
    and tidied: onnxruntime equals the layer (and BN) in PyTorch."""
    kernel, stride, padding, dilation, mode, opts = case
    torch.manual_seed(0)
    layer = FSConv(12, 20, kernel, stride, padding, dilation,
                   padding_mode=mode, **opts).eval()
    norm = _randomize_bn(torch.nn.BatchNorm2d(20)) if with_norm else None
    twin = ox.SummaryComputeTwin(layer, norm=norm).eval()
    x = torch.randn(2, 12, 13, 11)
    with torch.no_grad():
        want = layer(x) if norm is None else norm(layer(x))
        torch.testing.assert_close(twin(x), want, atol=1e-5, rtol=1e-4)
    path = tmp_path / 'twin.onnx'
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        torch.onnx.export(twin, (x[:1], ), str(path), dynamo=False,
                          input_names=['inputs'], output_names=['y'],
                          dynamic_axes={'inputs': {0: 'n'}, 'y': {0: 'n'}},
                          opset_version=wf.DEFAULT_OPSET,
                          do_constant_folding=False)
    proto = onnx.load(str(path))
    count = ox.tidy_graph(proto.graph, wf.DEFAULT_OPSET)
    assert count['nodes'][1] < count['nodes'][0]
    onnx.checker.check_model(proto)
    assert not any(n.domain for n in proto.graph.node)
    assert not {n.op_type for n in proto.graph.node} & {'Unsqueeze', 'Shape'}
    onnx.save(proto, str(path))
    for level in LEVELS:
        (got, ) = _run(path, x, level)
        torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-3)


def _randomize_bn(norm):
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        norm.running_mean.normal_(0, 0.1, generator=g)
        norm.running_var.uniform_(0.5, 2.0, generator=g)
        norm.weight.uniform_(0.5, 1.5, generator=g)
        norm.bias.normal_(0, 0.1, generator=g)
    return norm.eval()


def test_summary_compute_twin_refuses_what_cannot_compute_from_summary():
    with pytest.raises(ValueError, match='layout'):
        ox.SummaryComputeTwin(FSConv(8, 8, 3, layout='1d'))
    assert not ox.computes_from_summary(_dfs_moved(FSConv(8, 8, 3, dfs_radius=1)))
    assert not ox.computes_from_summary(FSLinear(8, 4))
    assert ox.computes_from_summary(FSConv(8, 8, 3))


def test_mode_error_lists_the_summary_mode(demo_model, tmp_path):
    with pytest.raises(ValueError, match=r"mode must be one of \('fs', 'wq', "
                       r"'baked', 'summary'\), got 'sum'"):
        ox.export_onnx(demo_model, str(tmp_path / 'a.onnx'), mode='sum')
    with pytest.raises(ValueError, match='mode must be one of'):
        ox.payload_bytes(demo_model, 'sum')
    assert ox.payload_bytes(demo_model, 'summary') == ox.payload_bytes(
        demo_model, 'fs')
    assert os.listdir(tmp_path) == []


@pytest.mark.e2e
def test_tool_exports_summary_compute_and_verifies(demo_checkpoint, tmp_path):
    """The real command line on the demo's model: --summary-compute --verify."""
    out = tmp_path / 'demo_summary.onnx'
    result = run_tool('tools/export_onnx.py', DEMO_CONFIG, demo_checkpoint,
                      out, '--summary-compute', '--verify')
    assert result.returncode == 0, result.stderr[-3000:]
    assert f'{out}: {out.stat().st_size:,} bytes, mode summary' in result.stdout
    assert (f'35 FS layers: {len(FEWER_OPS)} FSConvs computed from their '
            f'summaries in standard ops, {35 - len(FEWER_OPS)} with weights '
            f'computed in the graph from their summaries (functions '
            ) in result.stdout
    assert 'verified in onnxruntime' in result.stdout
    assert os.listdir(tmp_path) == ['demo_summary.onnx']
    proto = onnx.load(str(out))
    assert sum(bool(n.domain) for n in proto.graph.node) == 35 - len(FEWER_OPS)
    meta = {p.key: p.value for p in proto.metadata_props}
    assert meta[ox.META_MODE] == 'summary'


@pytest.mark.parametrize('other', ['--wq', '--baked'])
def test_tool_refuses_summary_compute_with_another_mode(
        demo_checkpoint, tmp_path, capsys, other):
    out = tmp_path / 'm.onnx'
    with pytest.raises(SystemExit) as exc:
        tool.main([str(DEMO_CONFIG), str(demo_checkpoint), str(out),
                   '--summary-compute', other])
    assert exc.value.code == 2  # argparse: the group is mutually exclusive
    assert (f'argument {other}: not allowed with argument --summary-compute'
            in capsys.readouterr().err)
    assert os.listdir(tmp_path) == []


# ------------------------------------------------------------ tool, sizes
@pytest.mark.e2e
def test_tool_exports_wq_and_verifies(demo_model, demo_checkpoint, tmp_path):
    """The real command line on the demo's model: --wq --verify."""
    out = tmp_path / 'demo_wq.onnx'
    result = run_tool('tools/export_onnx.py', DEMO_CONFIG, demo_checkpoint,
                      out, '--wq', '--verify')
    assert result.returncode == 0, result.stderr[-3000:]
    assert f'{out}: {out.stat().st_size:,} bytes, mode wq' in result.stdout
    assert '35 FS layers: weights computed in the graph from their 8-bit ' \
        'summaries (functions GridQ)' in result.stdout
    assert "verified in onnxruntime" in result.stdout
    assert os.listdir(tmp_path) == ['demo_wq.onnx']
    meta = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert meta[ox.META_MODE] == 'wq' and json.loads(meta[ox.META_GROUPS]) == [6, 6]


def _payload(model):
    """(summary bytes + other tensors) and the WQ checkpoint's payload."""
    names = fs_layers(model)
    state = model.state_dict()
    fp32 = sum(v.numel() * v.element_size() for k, v in state.items()
               if not k.endswith('num_batches_tracked'))
    packed = compress_state_dict(state, [f'{n}.summary' for n in names], {})
    wq = sum(t.numel() * t.element_size()
             for t in packed['packed']['data'].values())
    return fp32, wq


def test_size_bounds_on_the_demo_model(demo_model, wq_onnx, voc_inputs,
                                       tmp_path):
    """The demo's FS model (width 0.25), random weights: FS <= 1.10 x
    (summaries + other tensors), WQ <= 1.10 x the WQ checkpoint's payload;
    the baked export holds the dense weights (and computes the same)."""
    fp32, wq = _payload(demo_model)
    sizes = {mode: ox.export_onnx(demo_model, str(tmp_path / f'{mode}.onnx'),
                                  mode=mode).bytes
             for mode in ('fs', 'baked')}
    sizes['wq'] = wq_onnx.stat().st_size
    dense = sum(m.index.numel() for m in demo_model.modules()
                if isinstance(m, FSConv)) * 4
    assert sizes['fs'] <= 1.10 * fp32
    assert sizes['wq'] <= 1.10 * wq
    assert sizes['baked'] >= dense
    assert sizes['baked'] / sizes['wq'] > 25
    assert sorted(os.listdir(tmp_path)) == ['baked.onnx', 'fs.onnx']
    for got, want in zip(_run(tmp_path / 'baked.onnx', voc_inputs, 'all'),
                         _raw(demo_model, voc_inputs)):
        torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-3)


# ------------------------------------------------------------------ errors
def _tool_error(argv):
    with pytest.raises(SystemExit) as exc:
        tool.main([str(a) for a in argv])
    return str(exc.value.code)


def test_dense_model_has_nothing_to_compress(checkpoint, tmp_path):
    out = tmp_path / 'dense.onnx'
    message = _tool_error([DENSE_CONFIG, checkpoint, out])
    assert 'no FSConv or FSLinear layer: nothing to compress' in message
    assert '--baked' in message and f'{out} not written' in message
    assert os.listdir(tmp_path) == []


def test_checkpoint_that_does_not_fit(checkpoint, tmp_path):
    out = tmp_path / 'demo.onnx'  # the demo's width-0.25 model, 20-class weights
    message = _tool_error([DEMO_CONFIG, checkpoint, out])
    assert message.startswith(f'error: {checkpoint}:') and 'shape' in message
    assert os.listdir(tmp_path) == []


def test_unwritable_output(demo_model, demo_checkpoint, tmp_path):
    blocker = tmp_path / 'file'
    blocker.write_text('not a directory')
    out = blocker / 'sub' / 'm.onnx'
    message = _tool_error([DEMO_CONFIG, demo_checkpoint, out])
    assert message == (f'error: {out}: cannot write here ({blocker} is not a '
                       f'writable directory)')
    with pytest.raises(OSError, match='cannot write here'):
        ox.export_onnx(demo_model, str(out))
    with pytest.raises(IsADirectoryError):
        ox.export_onnx(demo_model, str(tmp_path))
    assert os.listdir(tmp_path) == ['file']


def test_failure_midway_leaves_nothing(demo_model, tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError('checker failed')
    monkeypatch.setattr(onnx.checker, 'check_model', broken)
    (tmp_path / 'old.onnx').write_bytes(b'previous')
    with pytest.raises(RuntimeError, match='checker failed'):
        ox.export_onnx(demo_model, str(tmp_path / 'old.onnx'))
    assert os.listdir(tmp_path) == ['old.onnx']  # kept, no temporary file
    assert (tmp_path / 'old.onnx').read_bytes() == b'previous'


def test_missing_onnx_says_how_to_install(demo_checkpoint, tmp_path,
                                          monkeypatch):
    monkeypatch.setitem(sys.modules, 'onnx', None)  # import onnx fails
    message = _tool_error([DEMO_CONFIG, demo_checkpoint, tmp_path / 'm.onnx'])
    assert "needs the optional package 'onnx'" in message
    assert "pip install -e '.[deploy]'" in message
    monkeypatch.setitem(sys.modules, 'onnxruntime', None)
    with pytest.raises(ox.MissingDeployDependency, match=r"'\.\[deploy\]'"):
        ort_session('model.onnx')
    assert os.listdir(tmp_path) == []
