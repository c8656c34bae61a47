"""FSNet-WQ: 8-bit summaries, compressed checkpoints, WQ evaluation, baking."""
import os
import subprocess
import sys

import pytest
import torch

from conftest import (TINY_CONFIG, TINY_WQ_CONFIG, build_detector,
                      load_config, run_tool, voc_batch)
from fsnet_mmdet import FSConv
from fsnet_mmdet.layers.wq import (compress_state_dict, decompress,
                                   dequantize, fake_quantize, quantize)
from fsnet_mmdet.utils.io import pack_tensors, unpack_tensors
from references import assert_same_detections, predict, run_test_tool


@pytest.mark.parametrize('shape,scale', [((64, 8, 8), 1.0), ((3, 5, 7), 1e-4),
                                         ((1000, 1, 1), 50.0)])
def test_quantize_error_at_most_half_a_level(shape, scale):
    summary = torch.randn(shape) * scale
    codes, lo, hi = quantize(summary)
    assert codes.dtype == torch.uint8 and codes.shape == summary.shape
    assert lo == summary.min().item() and hi == summary.max().item()
    assert codes.min() == 0 and codes.max() == 255
    error = (dequantize(codes, lo, hi) - summary).abs().max().item()
    assert error <= (hi - lo) / 510 * (1 + 1e-5)
    # Nearest level: no other level is closer (explicit over all 256 levels).
    levels = lo + torch.arange(256, dtype=torch.float64) * (hi - lo) / 255
    nearest = (summary.double().reshape(-1, 1) - levels).abs().argmin(1)
    assert (nearest - codes.reshape(-1).long()).abs().max() <= 1  # ties only


def test_constant_summary_round_trips_exactly():
    summary = torch.full((4, 3, 3), 0.37)
    codes, lo, hi = quantize(summary)
    restored = dequantize(codes, lo, hi)
    assert torch.equal(restored, summary) and not torch.isnan(restored).any()


def test_nan_summary_refused():
    with pytest.raises(ValueError, match='NaN or infinity'):
        quantize(torch.tensor([1.0, float('nan')]))


def test_requantizing_is_idempotent():
    summary = torch.randn(32, 8, 8)
    once = fake_quantize(summary)
    assert torch.equal(fake_quantize(once), once)


def test_compressed_checkpoint_leaves_dense_layers_and_bn_untouched(tmp_path):
    model = torch.nn.Sequential(FSConv(8, 16, 3), torch.nn.BatchNorm2d(16),
                                torch.nn.Conv2d(16, 4, 1))
    model[1].running_mean.uniform_()
    state = model.state_dict()
    ckpt = compress_state_dict(state, ['0.summary'], {'epoch': 3})
    torch.save(ckpt, tmp_path / 'c.pth')
    loaded = torch.load(tmp_path / 'c.pth', weights_only=True)  # no pickled code
    restored = decompress(loaded)['state_dict']
    assert set(restored) == set(state)
    for key in state:
        if key != '0.summary':
            assert torch.equal(restored[key], state[key]) and restored[key].dtype == state[key].dtype
    torch.testing.assert_close(restored['0.summary'], fake_quantize(state['0.summary']))
    assert unpack_tensors(pack_tensors(state)).keys() == state.keys()


@pytest.fixture(scope='module')
def quantized(trained, tmp_path_factory):
    """tools/quantize.py run once on the trained tiny FSNet-1 checkpoint:
    (the compressed file, the tool's result)."""
    out = tmp_path_factory.mktemp('wq') / 'wq.pth'
    result = run_tool('tools/quantize.py', TINY_CONFIG, trained / 'epoch_2.pth', out)
    assert result.returncode == 0, result.stderr[-3000:]
    return out, result


@pytest.mark.e2e
def test_quantize_tool_writes_small_weights_only_file(quantized):
    out, result = quantized
    assert os.listdir(out.parent) == ['wq.pth']  # no temporary file left
    effective = 441_902  # FSNet-1-WQ effective parameters (count_params)
    assert f'effective parameters {effective:,}' in result.stdout
    size = out.stat().st_size
    assert f'{size:,} bytes' in result.stdout
    assert size <= 1.05 * 4 * effective + 8192
    ckpt = torch.load(out, weights_only=True)
    assert ckpt['meta']['format'] == 'fsnet-wq' and len(ckpt['summaries']) == 35


def float_model_with_quantized_summaries(checkpoint):
    """The float tiny FSNet-1 (not the WQ config) holding ``checkpoint``,
    every summary replaced here by its 8-bit levels; checks each level is
    within half a step of the float value."""
    cfg = load_config(TINY_CONFIG)
    model = build_detector(cfg)
    state = torch.load(checkpoint, weights_only=False)['state_dict']
    model.load_state_dict(state, strict=True)
    layers = [(n, m) for n, m in model.named_modules() if isinstance(m, FSConv)]
    assert len(layers) == 35
    with torch.no_grad():
        for name, module in layers:
            summary = module.summary
            levels = fake_quantize(summary)
            step = (summary.max() - summary.min()).double() / 255
            ulp = summary.abs().max().double() * 2 ** -23  # float32
            assert ((levels - summary).double().abs()
                    <= step / 2 + ulp).all(), name
            summary.copy_(levels)
    return model, cfg


@pytest.mark.e2e
def test_wq_config_same_detections_from_compressed_and_float(trained, quantized):
    from mmengine.runner import load_checkpoint

    out, _ = quantized
    cfg = load_config(TINY_WQ_CONFIG)
    data = voc_batch(cfg.test_pipeline)
    outputs = []
    for checkpoint in (trained / 'epoch_2.pth', out):
        model = build_detector(cfg)
        load_checkpoint(model, str(checkpoint), map_location='cpu', strict=True)
        model.eval()
        with torch.no_grad():
            outputs.append(model.test_step(data))
    for a, b in zip(*outputs):
        assert len(a.pred_instances) > 0
        assert torch.equal(a.pred_instances.bboxes, b.pred_instances.bboxes)
        assert torch.equal(a.pred_instances.scores, b.pred_instances.scores)
        assert torch.equal(a.pred_instances.labels, b.pred_instances.labels)
    # The float model (not WQ) differs: quantization did happen.
    float_model = build_detector(load_config(TINY_CONFIG))
    load_checkpoint(float_model, str(trained / 'epoch_2.pth'), map_location='cpu')
    key = 'backbone.features.fc6.conv.summary'
    assert not torch.equal(float_model.state_dict()[key], model.state_dict()[key])


@pytest.mark.e2e
def test_wq_eval_through_tools_test(trained, quantized, tmp_path):
    """tools/test.py with the WQ config on the compressed file: the
    detections of the float model whose summaries were quantized here."""
    out, _ = quantized
    _, theirs = run_test_tool(TINY_WQ_CONFIG, out, tmp_path)
    model, cfg = float_model_with_quantized_summaries(trained / 'epoch_2.pth')
    assert_same_detections(predict(model, cfg), theirs)


@pytest.mark.e2e
def test_quantize_refuses_bad_input(trained, quantized, tmp_path):
    out = tmp_path / 'out.pth'
    result = run_tool('tools/quantize.py', 'configs/ssd300_bn_voc.py',
                      trained / 'epoch_2.pth', out)
    assert result.returncode != 0 and not out.exists()
    assert 'ssd300_bn_voc.py' in result.stderr
    # A checkpoint of other shapes (FSNet-1 weights, FSNet-2 config).
    result = run_tool('tools/quantize.py', 'configs/fsnet2_ssd300_voc.py',
                      trained / 'epoch_2.pth', out)
    assert result.returncode != 0 and not out.exists()
    assert "epoch_2.pth: 'backbone.features.conv1_2.conv.summary' has shape" in result.stderr
    # A truncated compressed checkpoint.
    bad = tmp_path / 'bad.pth'
    bad.write_bytes(quantized[0].read_bytes()[:100_000])
    result = run_tool('tools/quantize.py', TINY_CONFIG, bad, out)
    assert result.returncode != 0 and not out.exists()
    assert 'bad.pth: truncated, corrupted' in result.stderr


PLAIN_MMDET = r'''
import sys, torch
from mmengine.hub import get_config
from mmengine.registry import init_default_scope
from mmengine.runner import load_checkpoint
from mmdet.registry import MODELS
assert 'fsnet_mmdet' not in sys.modules
init_default_scope('mmdet')
cfg = get_config('mmdet::pascal_voc/ssd300_voc0712.py')
cfg.model.backbone.init_cfg = None
model = MODELS.build(cfg.model).eval()
load_checkpoint(model, sys.argv[1], map_location='cpu', strict=True)
x = torch.load(sys.argv[2])
with torch.no_grad():
    cls, reg = model(x, mode='tensor')
torch.save([*cls, *reg], sys.argv[3])
assert 'fsnet_mmdet' not in sys.modules
'''


@pytest.mark.e2e
def test_bake_to_stock_mmdet_ssd300_without_plugin(trained, tmp_path):
    out = tmp_path / 'stock.pth'
    result = run_tool('tools/bake.py', TINY_CONFIG, trained / 'epoch_2.pth', out)
    assert result.returncode == 0, result.stderr[-3000:]
    x = torch.randn(1, 3, 300, 300) * 50
    torch.save(x, tmp_path / 'x.pth')
    plain = subprocess.run(
        [sys.executable, '-c', PLAIN_MMDET, str(out), str(tmp_path / 'x.pth'),
         str(tmp_path / 'y.pth')], cwd=tmp_path, capture_output=True, text=True,
        timeout=300)
    assert plain.returncode == 0, plain.stderr[-3000:]
    theirs = torch.load(tmp_path / 'y.pth')
    from mmengine.runner import load_checkpoint
    model = build_detector(load_config(TINY_CONFIG))
    load_checkpoint(model, str(trained / 'epoch_2.pth'), map_location='cpu')
    model.eval()
    with torch.no_grad():
        cls, reg = model(x, mode='tensor')
    for ours, stock in zip([*cls, *reg], theirs):
        torch.testing.assert_close(stock, ours, rtol=1e-4, atol=1e-4)
