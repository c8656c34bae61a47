"""BSFConv: binary stacked filters (Lan & Lan 2020) as a registered conv."""
import os
import pickle

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from conftest import ROOT, build_detector, load_config, run_tool, voc_batch
from fsnet_mmdet import BSFConv, count_params
from fsnet_mmdet.compression.bsf import (balanced_selection, binarize, bsf_weight,
                                 compress_bsf_state_dict,
                                 decompress_bsf, index_bits, index_dtype,
                                 is_bsf_checkpoint, layer_bits,
                                 bsf_geometry, stm_conv2d)
from fsnet_mmdet.conversion import convert_to_fs
from fsnet_mmdet.compression.int8 import packed_bytes
from fsnet_mmdet.tools.baseline_checkpoints import compress_bsf_main

NARROW = ROOT / 'tests' / 'configs' / 'ssd300_bn_tiny_narrow.py'
BSF_NARROW = ROOT / 'tests' / 'configs' / 'bsf_ssd300_tiny_narrow.py'


# ------------------------------------------------------------- geometry
def test_geometry_rules_and_errors():
    assert bsf_geometry(64, 32, 16, 8) == (16, 8, 8)
    assert bsf_geometry(3, 16, 64, 16) == (16, 3, 1)   # d -> C, M -> K G
    with pytest.raises(ValueError, match=r'bank_channels=16 must divide '
                       r'in_channels=24 .*allowed: \[1, 2, 3, 4, 6, 8, 12, 24\]'):
        bsf_geometry(24, 8, 4, 16)
    for option in ('bank_size', 'bank_channels'):
        with pytest.raises(ValueError, match=f'{option} must be an int >= 1'):
            bsf_geometry(8, 8, **{'bank_size': 4, 'bank_channels': 4,
                                      option: 0})
    with pytest.raises(ValueError, match='groups=1 only'):
        BSFConv(8, 8, 3, groups=2)
    with pytest.raises(ValueError, match=r"forward_mode must be one of "
                       r"\('weight', 'stm'\), got 'dense'"):
        BSFConv(8, 8, 3, forward_mode='dense')


def test_selection_is_balanced_seeded_and_fixed():
    select = balanced_selection(10, 6, 7)
    assert select.shape == (10, 6) and select.dtype == torch.int64
    counts = torch.bincount(select.reshape(-1), minlength=7)
    assert counts.min() >= 60 // 7 and counts.max() <= -(-60 // 7)
    assert counts.sum() == 60
    assert torch.equal(select, balanced_selection(10, 6, 7, seed=0))
    assert not torch.equal(select, balanced_selection(10, 6, 7, seed=1))
    torch.manual_seed(123)  # the global RNG does not change it
    assert torch.equal(BSFConv(12, 10, 3, bank_size=7, bank_channels=2).select,
                       select)


# --------------------------------------------------------- binarize, STE
def test_binarize_forward_and_straight_through_gradient_by_hand():
    latent = torch.tensor([-1.5, -1.0, -0.2, 0.0, 0.7, 1.0, 2.0],
                          requires_grad=True)
    binary = binarize(latent)
    assert binary.tolist() == [-1, -1, -1, 1, 1, 1, 1]
    binary.backward(torch.arange(1.0, 8.0))
    # The gradient passes where |w| <= 1 and stops outside.
    assert latent.grad.tolist() == [0, 2, 3, 4, 5, 6, 0]


def explicit_weight(layer: BSFConv) -> torch.Tensor:
    """Filter k, slice g: scale[k] * sign(bank[select[k, g]]), element by element."""
    m, d, slices = layer.geometry
    kh, kw = layer.kernel_size
    weight = torch.zeros(layer.out_channels, layer.in_channels, kh, kw)
    for k in range(layer.out_channels):
        for g in range(slices):
            source = layer.bank[layer.select[k, g]]
            for c in range(d):
                for i in range(kh):
                    for j in range(kw):
                        sign = 1.0 if source[c, i, j] >= 0 else -1.0
                        weight[k, g * d + c, i, j] = layer.scale[k] * sign
    return weight


def explicit_conv(x, weight, bias, stride, padding, dilation):
    """Direct convolution by loops (zero padding), the independent reference."""
    n, c, h, w = x.shape
    k, _, kh, kw = weight.shape
    xp = F.pad(x, (padding, padding, padding, padding))
    oh = (h + 2 * padding - dilation * (kh - 1) - 1) // stride + 1
    ow = (w + 2 * padding - dilation * (kw - 1) - 1) // stride + 1
    out = torch.zeros(n, k, oh, ow, dtype=torch.float64)
    span_h, span_w = dilation * (kh - 1) + 1, dilation * (kw - 1) + 1
    for b in range(n):
        for o in range(k):
            for y in range(oh):
                for z in range(ow):
                    top, left = y * stride, z * stride
                    patch = xp[b, :, top:top + span_h:dilation,
                               left:left + span_w:dilation]
                    out[b, o, y, z] = (patch.double() *
                                       weight[o].double()).sum()
            if bias is not None:
                out[b, o] += bias[o].double()
    return out


@pytest.mark.parametrize('stride,padding,dilation', [(1, 1, 1), (2, 0, 1),
                                                     (1, 2, 2)])
def test_both_forwards_match_an_explicit_loop(stride, padding, dilation):
    layer = BSFConv(8, 5, 3, stride, padding, dilation, bank_size=3,
                    bank_channels=4)
    with torch.no_grad():
        layer.bank.uniform_(-1, 1)
        layer.scale.uniform_(0.5, 2)
    weight = explicit_weight(layer)
    assert torch.equal(layer.weight, weight)
    assert torch.equal(layer.to_conv2d().weight, weight)
    x = torch.randn(2, 8, 7, 6)
    reference = explicit_conv(x, weight, layer.bias, stride, padding, dilation)
    for mode in ('weight', 'stm'):
        layer.forward_mode = mode
        torch.testing.assert_close(layer(x).double(), reference, rtol=1e-5,
                                   atol=1e-5)


def test_split_transform_merge_equals_materialized_conv():
    torch.manual_seed(1)
    bank = torch.randint(0, 2, (6, 4, 3, 3)).float() * 2 - 1
    select = balanced_selection(9, 4, 6, seed=3)
    scale, bias = torch.rand(9) + 0.5, torch.randn(9)
    x = torch.randn(2, 16, 11, 10)
    for stride, padding, dilation in ((1, 1, 1), (2, 3, 2)):
        dense = F.conv2d(x, bsf_weight(bank, select, scale), bias, stride,
                         padding, dilation)
        torch.testing.assert_close(
            stm_conv2d(x, bank, select, scale, bias, stride, padding, dilation),
            dense, rtol=1e-5, atol=1e-5)
    # Non-zero padding modes go through the module's own padding.
    layer = BSFConv(16, 9, 3, padding=1, padding_mode='reflect', bank_size=6,
                    bank_channels=4)
    expected = F.conv2d(F.pad(x, (1, 1, 1, 1), mode='reflect'), layer.weight,
                        layer.bias)
    for mode in ('weight', 'stm'):
        layer.forward_mode = mode
        torch.testing.assert_close(layer(x), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('mode', ['weight', 'stm'])
@pytest.mark.parametrize('latent1', [-2.0, -0.9])
def test_backward_matches_a_hand_computed_gradient(mode, latent1):
    # 2 -> 2 channels, 1x1, slices of 1 channel, a bank of 2 filters.
    layer = BSFConv(2, 2, 1, bias=False, bank_size=2, bank_channels=1,
                    forward_mode=mode)
    with torch.no_grad():
        layer.select.copy_(torch.tensor([[0, 1], [1, 1]]))
        layer.bank.copy_(torch.tensor([0.5, latent1]).view(2, 1, 1, 1))
        layer.scale.copy_(torch.tensor([2.0, 3.0]))
    x = torch.tensor([1.0, 4.0]).view(1, 2, 1, 1)
    y = layer(x).view(2)
    # b = (+1, -1); W = [[2, -2], [-3, -3]]: y = (2 - 8, -3 - 12).
    assert y.tolist() == [-6.0, -15.0]
    (y[0] + 2 * y[1]).backward()
    # dL/dW[k, c] = dL/dy_k x_c = [[1, 4], [2, 8]]. Bank filter 0 sits at
    # (0, 0) with scale 2: 2 * 1 = 2. Filter 1 at (0, 1), (1, 0), (1, 1):
    # 2 * 4 + 3 * 2 + 3 * 8 = 38, passed only if |latent| <= 1.
    assert layer.bank.grad.view(2).tolist() == [2.0, 38.0 if latent1 > -1 else 0.0]
    # dL/dscale[k] = sum_c dL/dW[k, c] b: (1 - 4, -2 - 8).
    assert layer.scale.grad.tolist() == [-3.0, -10.0]


def test_gradients_of_both_forwards_agree_with_the_dense_chain_rule():
    layer = BSFConv(12, 7, 3, padding=1, bank_size=5, bank_channels=4)
    x, r = torch.randn(2, 12, 6, 6), torch.randn(2, 7, 6, 6)
    weight = layer.weight.clone().requires_grad_()
    (F.conv2d(x, weight, layer.bias, padding=1) * r).sum().backward()
    dw = weight.grad  # the dense conv's gradient, then the chain rule by loop
    m, d, slices = layer.geometry
    expected_bank = torch.zeros_like(layer.bank)
    binary = torch.where(layer.bank >= 0, 1.0, -1.0)
    expected_scale = torch.zeros(7)
    for k in range(7):
        for g in range(slices):
            s = layer.select[k, g]
            block = dw[k, g * d:(g + 1) * d]
            expected_bank[s] += layer.scale[k].detach() * block
            expected_scale[k] += (block * binary[s]).sum()
    expected_bank *= (layer.bank.abs() <= 1)
    for mode in ('weight', 'stm'):
        layer.zero_grad()
        layer.forward_mode = mode
        (layer(x) * r).sum().backward()
        torch.testing.assert_close(layer.bank.grad, expected_bank,
                                   rtol=1e-5, atol=1e-4)
        torch.testing.assert_close(layer.scale.grad, expected_scale,
                                   rtol=1e-5, atol=1e-4)


# ------------------------------------------------- module, registry, init
def test_registry_state_dict_and_initializers():
    from mmcv.cnn import ConvModule, build_conv_layer
    from mmengine.model import initialize

    layer = build_conv_layer(dict(type='BSFConv', bank_size=4, bank_channels=2),
                             8, 6, 3, padding=1)
    assert type(layer) is BSFConv and layer.padding == (1, 1)
    assert set(layer.state_dict()) == {'bank', 'scale', 'bias', 'select'}
    assert layer.bank.shape == (4, 2, 3, 3) and layer.select.shape == (6, 4)
    # Default init: filters of nn.Conv2d's default variance, 1 / (3 fan_in).
    torch.testing.assert_close(layer.scale, torch.full((6,), (3 * 72) ** -0.5))
    assert layer.bank.abs().max() <= 1
    # An initializer writing `weight` sets each scale to the RMS written.
    nn.init.constant_(layer.weight, -0.5)
    assert layer.scale.tolist() == [0.5] * 6
    initialize(layer, dict(type='Constant', layer='Conv2d', val=0.25, bias=0.1))
    assert layer.scale.tolist() == [0.25] * 6
    torch.testing.assert_close(layer.bias, torch.full((6,), 0.1))
    # mmcv's ConvModule (kaiming, fan_out) reaches it too.
    module = ConvModule(8, 16, 3, conv_cfg=dict(type='BSFConv', bank_size=4),
                        norm_cfg=dict(type='BN'))
    module.init_weights()
    assert type(module.conv) is BSFConv and module.conv.bias is None
    assert 0.8 < (module.conv.scale / (2 / (16 * 9)) ** 0.5).mean() < 1.2


def test_checkpoint_selection_outside_the_bank_is_refused():
    layer = BSFConv(8, 4, 3, bank_size=4, bank_channels=4)
    state = layer.state_dict()
    state['select'] = torch.full((4, 2), 4)
    with pytest.raises(ValueError, match=r'select: selection indices must lie '
                       r'in \[0, 4\) \(bank_size\), got \[4, 4\]'):
        layer.load_state_dict(state)


# ------------------------------------------------------------------ bits
def test_bits_and_params_counted_by_hand():
    assert [index_bits(m) for m in (1, 2, 5, 8, 256, 257)] == [0, 1, 3, 3, 8, 9]
    layer = BSFConv(32, 24, 3, bank_size=8, bank_channels=8)  # G = 4
    bits = layer_bits(layer)
    assert (bits.bank, bits.index, bits.scale, bits.bias) == (
        8 * 8 * 9, 24 * 4 * 3, 32 * 24, 32 * 24)
    assert bits.total == 576 + 288 + 768 + 768
    model = nn.Sequential(layer, nn.BatchNorm2d(24), nn.Conv2d(24, 4, 1))
    report = count_params(model)
    assert report.bits == 2400 + 32 * 48 + 32 * (4 * 24 + 4)
    assert report.effective == report.bits / 32
    assert [layer.bits for layer in report.layers] == [2400, 32 * 100]
    assert report.dense == 24 * 32 * 9 + 24 + 48 + 100
    assert report.stored == (576 + 24 + 24) + 48 + 100
    assert [(p.name, p.dense, p.stored) for p in report.layers] == [
        ('0', 24 * 32 * 9 + 24, 624), ('2', 100, 100)]
    single = BSFConv(4, 2, 1, bias=False, bank_size=1, bank_channels=4)
    assert layer_bits(single).total == 4 + 0 + 64


# --------------------------------------------------- compressed checkpoint
def test_index_dtype_is_the_smallest_that_holds_the_bank():
    assert [index_dtype(m) for m in (2, 256, 257, 40000)] == [
        torch.uint8, torch.uint8, torch.int16, torch.int32]


def bsf_model() -> nn.Module:
    model = nn.Sequential(BSFConv(8, 12, 3, padding=1, bank_size=6,
                                  bank_channels=4),
                          nn.BatchNorm2d(12),
                          BSFConv(12, 5, 1, bias=False, bank_size=300,
                                  bank_channels=1))
    model[1].running_var.uniform_(0.5, 2)
    with torch.no_grad():
        model[0].bank[0, 0, 0, 0] = 0.0  # sign of zero: +1
        model[0].bank.mul_(3)            # latents outside [-1, 1] too
    return model.eval()


def test_compressed_checkpoint_round_trip_and_byte_count(tmp_path):
    model = bsf_model()
    state = model.state_dict()
    ckpt = compress_bsf_state_dict(state, ['0', '2'], {'iter': 5})
    torch.save(ckpt, tmp_path / 'c.pth')
    loaded = torch.load(tmp_path / 'c.pth', weights_only=True)
    assert is_bsf_checkpoint(loaded) and loaded['layers']['2']['bank_shape'] == [
        60, 1, 1, 1]  # bank_size 300 lowered to K G = 60
    restored = decompress_bsf(loaded, 'c.pth')
    assert restored['meta'] == {'iter': 5}
    restored = restored['state_dict']
    assert list(restored) == list(state)
    for key, value in state.items():
        assert restored[key].dtype == value.dtype, key
        if key.endswith('.bank'):
            assert torch.equal(restored[key], torch.where(value >= 0, 1.0, -1.0))
        else:
            assert torch.equal(restored[key], value), key
    twin = bsf_model()
    twin.load_state_dict(restored)
    x = torch.randn(2, 8, 5, 5)
    with torch.no_grad():
        assert torch.equal(twin(x), model(x))
    # Payload by hand: packed bank bits, one byte per index (M = 6 and 60,
    # both <= 256: uint8), the rest in float32 / int64.
    bank_bytes = -(-6 * 4 * 9 // 8) + -(-60 // 8)
    index_bytes = 12 * 2 + 5 * 12
    rest = sum(v.numel() * v.element_size() for k, v in state.items()
               if not k.endswith(('.bank', '.select')))
    assert packed_bytes(ckpt['packed']) == bank_bytes + index_bytes + rest
    size = (tmp_path / 'c.pth').stat().st_size
    assert packed_bytes(ckpt['packed']) < size < packed_bytes(ckpt['packed']) + 8192


def test_compression_and_decompression_refuse_bad_input():
    model = bsf_model()
    state = dict(model.state_dict())
    state['0.bank'] = state['0.bank'].clone()
    state['0.bank'][1, 1, 1, 1] = float('nan')
    with pytest.raises(ValueError, match='0.bank: the latent bank holds NaN'):
        compress_bsf_state_dict(state, ['0'], {})
    with pytest.raises(ValueError, match=r'nope.bank: no \(M, d, S1, S2\)'):
        compress_bsf_state_dict(model.state_dict(), ['nope'], {})

    def broken(edit):
        ckpt = compress_bsf_state_dict(model.state_dict(), ['0', '2'], {})
        edit(ckpt)
        return ckpt

    with pytest.raises(ValueError, match='f.pth: BSF checkpoint version 2'):
        decompress_bsf(broken(lambda c: c['meta'].update(version=2)), 'f.pth')
    with pytest.raises(ValueError, match=r"f.pth: malformed BSF layer '0': "
                       r"needs 32 uint8 bytes"):
        decompress_bsf(broken(lambda c: c['layers']['0'].update(
            bank_shape=[7, 4, 3, 3])), 'f.pth')
    with pytest.raises(ValueError, match=r"malformed BSF layer '2'.*expected "
                       r"bank_shape and dtype"):
        decompress_bsf(broken(lambda c: c['layers']['2'].update(dtype='nope')),
                       'f.pth')
    with pytest.raises(ValueError, match=r"'0': its selection must be \(K, G\) "
                       r"integers in \[0, 6\)"):
        decompress_bsf(broken(lambda c: c['packed']['data']['uint8'].fill_(9)),
                       'f.pth')


# ----------------------------------------------------------- conversion
def test_fs_convert_style_conversion_to_bsf():
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(),
                          nn.Conv2d(8, 16, 1), nn.Flatten(), nn.Linear(16, 2))
    dense = [model[0].weight.detach().clone(), model[3].weight.detach().clone()]
    bias = model[0].bias.detach().clone()
    report = convert_to_fs(model, exclude='3',
                           conv=dict(type='BSFConv', bank_size=4))
    assert report.converted == [('0', 'BSFConv')]
    assert report.kept_dense == []
    assert 'fs_convert: 1 conv and 0 linear layers made BSFConv' in report.summary()
    assert type(model[0]) is BSFConv and type(model[3]) is nn.Conv2d
    assert model[0].geometry == (4, 3, 1)
    # The dense layer's magnitude (RMS per filter) and bias carry over.
    torch.testing.assert_close(model[0].scale,
                               dense[0].pow(2).mean((1, 2, 3)).sqrt())
    assert torch.equal(model[0].bias, bias)
    conv = nn.Conv2d(8, 4, 3, stride=2, padding=1, dilation=2)
    twin = BSFConv.from_conv2d(conv, bank_size=2, bank_channels=4)
    assert (twin.stride, twin.padding, twin.dilation) == ((2, 2), (1, 1), (2, 2))
    torch.testing.assert_close(twin.scale, conv.weight.pow(2).mean((1, 2, 3)).sqrt())
    assert torch.equal(twin.bias, conv.bias)
    with pytest.raises(ValueError, match=r"fs_convert: 3 \(Conv2d\): conv type "
                       r"must name a registered nn.Conv2d subclass.*got 'Nope'"):
        convert_to_fs(model, conv=dict(type='Nope'))
    assert type(model[3]) is nn.Conv2d  # nothing replaced on error


def test_detector_with_fs_convert_to_bsf_trains_every_bank():
    cfg = load_config(NARROW, **{'model.fs_convert': dict(
        conv=dict(type='BSFConv', bank_size=8, bank_channels=8))})
    model = build_detector(cfg)
    layers = [m for m in model.modules() if isinstance(m, BSFConv)]
    assert len(layers) == 35 and not any(
        type(m) is nn.Conv2d for m in model.modules())
    data = model.data_preprocessor(voc_batch(cfg.train_pipeline), training=True)
    losses = model.loss(data['inputs'], data['data_samples'])
    total, _ = model.parse_losses(losses)
    assert torch.isfinite(total) and total > 0
    # Every output level (hard negative mining may leave one without a
    # detection loss on two images) reaches every bank and scale.
    outputs = model(data['inputs'], mode='tensor')
    sum(o.square().mean() for level in outputs for o in level).backward()
    for layer in layers:
        assert layer.bank.grad is not None and layer.bank.grad.abs().sum() > 0
        assert layer.scale.grad.abs().sum() > 0


# ------------------------------------------- detector through conv_cfg, tools
@pytest.mark.e2e
def test_bsf_detector_compressed_evaluates_through_tools_test(tmp_path):
    from mmengine.runner import Runner, load_checkpoint
    cfg = load_config(BSF_NARROW)
    model = build_detector(cfg)
    assert sum(isinstance(m, BSFConv) for m in model.modules()) == 35
    report = count_params(model)
    bits = report.bits
    float_path = tmp_path / 'bsf.pth'
    torch.save({'meta': {'epoch': 1}, 'state_dict': model.state_dict()},
               float_path)
    out = tmp_path / 'bsf_c.pth'
    compress_bsf_main([str(BSF_NARROW), str(float_path), str(out)])
    ckpt = torch.load(out, weights_only=True)
    assert is_bsf_checkpoint(ckpt) and len(ckpt['layers']) == 35
    # The file: the bank bits and uint8 indices of `count_params` (an index
    # takes a byte, not ceil(log2 M) bits), float32 scales, biases, BN.
    bsf = [m for m in model.modules() if isinstance(m, BSFConv)]
    layer_bytes = sum(-(-m.bank.numel() // 8) + m.select.numel() for m in bsf)
    rest = sum(v.numel() * v.element_size()
               for k, v in model.state_dict().items()
               if not k.endswith(('.bank', '.select')))
    assert packed_bytes(ckpt['packed']) == layer_bytes + rest
    assert out.stat().st_size < packed_bytes(ckpt['packed']) + 32768
    assert bits < 32 * report.dense / 20  # > 20x smaller than float32 dense

    dump = tmp_path / 'det.pkl'
    result = run_tool('tools/test.py', BSF_NARROW, out, '--work-dir', tmp_path,
                      '--out', dump)
    assert result.returncode == 0, result.stderr[-3000:]
    with open(dump, 'rb') as f:
        theirs = pickle.load(f)
    reference = build_detector(cfg)
    load_checkpoint(reference, str(float_path), map_location='cpu', strict=True)
    reference.eval()
    ours = []
    with torch.no_grad():
        for batch in Runner.build_dataloader(cfg.test_dataloader):
            ours += reference.test_step(batch)
    assert len(ours) == len(theirs) == 1
    for a, b in zip(ours, theirs):
        assert len(a.pred_instances) > 0
        assert torch.equal(a.pred_instances.labels, b['pred_instances']['labels'])
        assert torch.equal(a.pred_instances.bboxes, b['pred_instances']['bboxes'])
        assert torch.equal(a.pred_instances.scores, b['pred_instances']['scores'])


@pytest.mark.e2e
def test_compress_tool_refuses_a_model_without_bsf_and_bad_outputs(tmp_path):
    def error(argv):
        with pytest.raises(SystemExit) as exit_info:
            compress_bsf_main([str(a) for a in argv])
        return str(exit_info.value.code)

    out = tmp_path / 'out.pth'
    assert 'has no BSFConv layer, nothing to compress' in error(
        [NARROW, tmp_path / 'missing.pth', out])
    assert 'missing.pth can not be found' in error(
        [BSF_NARROW, tmp_path / 'missing.pth', out])
    assert f'{tmp_path}: is a directory' in error(
        [BSF_NARROW, tmp_path / 'missing.pth', tmp_path])
    assert os.listdir(tmp_path) == []


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA device')
@pytest.mark.parametrize('mode', ['weight', 'stm'])
def test_cuda_matches_cpu(mode, monkeypatch):
    monkeypatch.setattr(torch.backends.cudnn, 'allow_tf32', False)
    monkeypatch.setattr(torch.backends.cuda.matmul, 'allow_tf32', False)
    cpu = BSFConv(16, 12, 3, padding=1, bank_size=5, bank_channels=4,
                  forward_mode=mode)
    gpu = BSFConv(16, 12, 3, padding=1, bank_size=5, bank_channels=4,
                  forward_mode=mode, device='cuda')
    gpu.load_state_dict(cpu.state_dict())
    x, r = torch.randn(2, 16, 9, 9), torch.randn(2, 12, 9, 9)
    (cpu(x) * r).sum().backward()
    out = gpu(x.cuda())
    (out * r.cuda()).sum().backward()
    torch.testing.assert_close(out.cpu(), cpu(x), rtol=1e-4, atol=1e-4)
    for name in ('bank', 'scale', 'bias'):
        torch.testing.assert_close(getattr(gpu, name).grad.cpu(),
                                   getattr(cpu, name).grad, rtol=1e-4, atol=1e-4)
    assert gpu.select.device.type == 'cuda'
    ckpt = compress_bsf_state_dict(gpu.state_dict(), [''], {})
    restored = decompress_bsf(ckpt)['state_dict']
    assert torch.equal(restored['bank'], torch.where(cpu.bank >= 0, 1.0, -1.0))
    assert torch.equal(restored['select'], cpu.select)


def test_a_bare_layer_compresses_under_its_own_keys():
    layer = BSFConv(8, 4, 1, bank_size=3, bank_channels=2)
    ckpt = compress_bsf_state_dict(layer.state_dict(), [''], {})
    twin = BSFConv(8, 4, 1, bank_size=3, bank_channels=2)
    twin.load_state_dict(decompress_bsf(ckpt)['state_dict'])
    assert torch.equal(twin.weight, layer.weight)
