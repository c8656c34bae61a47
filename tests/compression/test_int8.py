"""Per-output-channel int8 weights: codes, the compressed checkpoint, tools."""
import os
import pickle
import struct

import pytest
import torch
from torch import nn

from conftest import ROOT, build_detector, load_config, run_tool
from fsnet_mmdet import BSFConv, FSConv
from fsnet_mmdet.compression.int8 import (compress_state_dict, decompress,
                              dequantize_per_channel, fake_quantize_per_channel,
                              int8_weights, is_int8_checkpoint, checkpoint_payload_bytes,
                              quantize_per_channel)
from fsnet_mmdet.tools.baseline_checkpoints import quantize_int8_main

NARROW = ROOT / 'tests' / 'configs' / 'ssd300_bn_tiny_narrow.py'
BSF_NARROW = ROOT / 'tests' / 'configs' / 'bsf_ssd300_tiny_narrow.py'


def f32(value: float) -> float:
    """``value`` rounded to float32, as a Python float."""
    return struct.unpack('f', struct.pack('f', value))[0]


# ------------------------------------------------------------ pure functions
def test_codes_scales_and_levels_of_a_hand_computed_example():
    weight = torch.tensor([[254.0, -100.0, 3.0, 1.0],   # max 254: scale 2
                           [0.0, 0.0, 0.0, 0.0],        # all zero: scale 0
                           [-127.0, 0.25, 64.0, 10.0]])  # max 127: scale 1
    codes, scales = quantize_per_channel(weight)
    # 3 / 2 = 1.5 and 1 / 2 = 0.5 are ties: half to even gives 2 and 0.
    assert codes.dtype == torch.int8 and scales.dtype == torch.float32
    assert codes.tolist() == [[127, -50, 2, 0], [0, 0, 0, 0],
                              [-127, 0, 64, 10]]
    assert scales.tolist() == [2.0, 0.0, 1.0]
    assert dequantize_per_channel(codes, scales).tolist() == [
        [254.0, -100.0, 4.0, 0.0], [0.0, 0.0, 0.0, 0.0],
        [-127.0, 0.0, 64.0, 10.0]]


def explicit_quantize(weight: torch.Tensor, axis: int):
    """The rule of fsnet_mmdet.compression.int8, one element at a time in Python floats."""
    moved = weight.movedim(axis, 0)
    codes = torch.zeros(moved.shape, dtype=torch.int8)
    scales = []
    for k in range(moved.shape[0]):
        values = moved[k].reshape(-1).tolist()
        scale = f32(max(abs(v) for v in values) / 127)
        scales.append(scale)
        flat = codes[k].view(-1)
        for i, v in enumerate(values):
            q = round(v / scale) if scale > 0 else 0  # round(): half to even
            flat[i] = max(-127, min(127, q))
    return codes.movedim(0, axis), torch.tensor(scales)


@pytest.mark.parametrize('shape,axis', [((6, 4, 3, 3), 0),   # conv
                                        ((5, 7), 0),         # linear
                                        ((4, 6, 2, 2), 1)])  # transposed conv
def test_codes_match_an_explicit_loop_and_levels_are_nearest(shape, axis):
    weight = torch.randn(shape) * torch.logspace(-3, 1, shape[axis]).view(
        [-1 if d == axis else 1 for d in range(len(shape))])
    codes, scales = quantize_per_channel(weight, axis)
    ref_codes, ref_scales = explicit_quantize(weight, axis)
    assert torch.equal(codes, ref_codes)
    assert torch.equal(scales, ref_scales)
    restored = dequantize_per_channel(codes, scales, axis)
    step = scales.view([-1 if d == axis else 1 for d in range(len(shape))])
    assert ((restored - weight).abs() <= step / 2 * (1 + 1e-6)).all()
    # Every channel reaches +-127 (its largest weight), none goes past.
    assert codes.abs().movedim(axis, 0).reshape(shape[axis], -1).amax(1).eq(
        127).all()
    assert torch.equal(fake_quantize_per_channel(weight, axis), restored)


def test_bad_weights_are_refused_naming_them():
    with pytest.raises(ValueError, match=r'conv\.weight: cannot quantize a '
                       r'weight holding NaN or infinity'):
        quantize_per_channel(torch.tensor([[1.0, float('nan')]]),
                             name='conv.weight')
    with pytest.raises(ValueError, match='needs a floating-point weight'):
        quantize_per_channel(torch.ones(2, 2, dtype=torch.int64))
    with pytest.raises(ValueError, match=r'axis must be an int in \[-2, 1\]'):
        quantize_per_channel(torch.ones(2, 2), axis=2)
    state = {'a.weight': torch.ones(2, 3), 'b.weight': torch.ones(2, 3)}
    state['b.weight'][1, 2] = float('inf')
    with pytest.raises(ValueError, match='b.weight: cannot quantize'):
        compress_state_dict(state, {'a.weight': 0, 'b.weight': 0}, {})


def test_int8_weights_lists_the_dense_convs_and_linears_with_their_axis():
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8),
                          FSConv(8, 16, 3), BSFConv(16, 8, 3, bank_size=4),
                          nn.ConvTranspose2d(8, 4, 2), nn.Flatten(),
                          nn.Linear(4, 2), nn.Conv1d(2, 2, 1))
    assert int8_weights(model) == {'0.weight': 0, '4.weight': 1,
                                   '6.weight': 0, '7.weight': 0}


# ---------------------------------------------------- compressed checkpoint
def small_model() -> nn.Module:
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8),
                          nn.ConvTranspose2d(8, 4, 2), nn.Flatten(),
                          nn.Linear(4, 2, bias=False))
    model[1].running_mean.uniform_()
    model.double()  # a weight that is not float32 keeps its dtype
    model[4].float()
    return model


def test_compressed_checkpoint_round_trip_and_byte_count(tmp_path):
    model = small_model()
    state, weights = model.state_dict(), int8_weights(model)
    ckpt = compress_state_dict(state, weights, {'epoch': 3})
    torch.save(ckpt, tmp_path / 'c.pth')
    loaded = torch.load(tmp_path / 'c.pth', weights_only=True)  # no code
    assert is_int8_checkpoint(loaded) and loaded['meta']['format'] == 'fsnet-int8'
    restored = decompress(loaded, 'c.pth')
    assert restored['meta'] == {'epoch': 3}
    restored = restored['state_dict']
    assert list(restored) == list(state)
    for key, value in state.items():
        assert restored[key].dtype == value.dtype, key
        if key in weights:
            assert torch.equal(restored[key],
                               fake_quantize_per_channel(value, weights[key]))
            assert not torch.equal(restored[key], value)
        else:
            assert torch.equal(restored[key], value), key
    # Payload, by hand: a byte per code, 4 per scale, the rest their size.
    codes = sum(state[k].numel() for k in weights)
    scales = 8 + 4 + 2  # output channels: conv 8, transposed conv 4, linear 2
    rest = sum(v.numel() * v.element_size() for k, v in state.items()
               if k not in weights)
    assert checkpoint_payload_bytes(ckpt) == codes + 4 * scales + rest
    size = (tmp_path / 'c.pth').stat().st_size
    assert checkpoint_payload_bytes(ckpt) < size < checkpoint_payload_bytes(ckpt) + 8192


def test_malformed_checkpoints_are_refused_naming_file_and_entry():
    model = small_model()
    good = compress_state_dict(model.state_dict(), int8_weights(model), {})

    def broken(edit):
        ckpt = compress_state_dict(model.state_dict(), int8_weights(model), {})
        edit(ckpt)
        return ckpt

    with pytest.raises(ValueError, match='f.pth: int8 checkpoint version 7'):
        decompress(broken(lambda c: c['meta'].update(version=7)), 'f.pth')
    with pytest.raises(ValueError, match=r"f.pth: malformed int8 weight "
                       r"'0.weight'.*expected axis and dtype"):
        decompress(broken(lambda c: c['weights']['0.weight'].pop('axis')),
                   'f.pth')
    with pytest.raises(ValueError, match=r"malformed int8 weight '2.weight': "
                       r"needs int8 codes.*axis 0"):
        decompress(broken(lambda c: c['weights']['2.weight'].update(axis=0)),
                   'f.pth')  # 8 channels on axis 0, 4 scales
    with pytest.raises(ValueError, match=r"'0.weight': scales must be finite"):
        decompress(broken(lambda c: c['scales']['data']['float32'].__setitem__(
            0, -1.0)), 'f.pth')
    with pytest.raises(ValueError, match=r"f.pth: malformed compressed "
                       r"checkpoint .*runs past"):
        decompress(broken(lambda c: c['packed']['data'].update(
            int8=c['packed']['data']['int8'][:5])), 'f.pth')
    codes = good['packed']['data']['int8']
    codes[0] = -128  # outside the symmetric grid
    with pytest.raises(ValueError, match=r'codes in \[-127, 127\]'):
        decompress(good, 'f.pth')


# --------------------------------------------------------- detector, tools
@pytest.fixture(scope='module')
def dense(tmp_path_factory):
    """A narrow dense SSD300-BN (seeded init, BN statistics moved) saved as a
    Runner-style float checkpoint."""
    torch.manual_seed(0)
    model = build_detector(load_config(NARROW))
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.1, 0.1)
            module.running_var.uniform_(0.5, 2.0)
    path = tmp_path_factory.mktemp('dense') / 'dense.pth'
    torch.save({'meta': {'epoch': 1}, 'state_dict': model.state_dict()}, path)
    return path


@pytest.fixture(scope='module')
def quantized(dense, tmp_path_factory):
    out_dir = tmp_path_factory.mktemp('int8')
    out = out_dir / 'int8.pth'
    result = run_tool('tools/quantize_int8.py', NARROW, dense, out)
    assert result.returncode == 0, result.stderr[-3000:]
    return out, result.stdout


def in_memory_int8_model(dense_path):
    """The narrow dense model with its float weights, every conv / linear
    weight replaced in memory by its dequantized int8 levels."""
    model = build_detector(load_config(NARROW))
    model.load_state_dict(torch.load(dense_path, weights_only=True)['state_dict'])
    with torch.no_grad():
        for key, axis in int8_weights(model).items():
            weight = model.get_parameter(key)
            weight.copy_(fake_quantize_per_channel(weight, axis))
    return model.eval()


@pytest.mark.e2e
def test_tool_writes_a_weights_only_int8_file_and_counts_its_bytes(quantized):
    out, stdout = quantized
    assert os.listdir(out.parent) == ['int8.pth']  # no temporary file left
    ckpt = torch.load(out, weights_only=True)
    assert is_int8_checkpoint(ckpt) and ckpt['meta']['source'] == 'dense.pth'
    assert len(ckpt['weights']) == 35  # 15 VGG + 8 extra + 12 predictor convs
    size = out.stat().st_size
    assert f'{out}: {size:,} bytes (tensor payload {checkpoint_payload_bytes(ckpt):,})' \
        in stdout
    model = build_detector(load_config(NARROW))
    params = sum(p.numel() for p in model.parameters())
    state, quantized = model.state_dict(), int8_weights(model)
    weights = sum(state[k].numel() for k in quantized)
    channels = sum(state[k].shape[0] for k in quantized)
    rest = sum(v.numel() * v.element_size() for k, v in state.items()
               if k not in quantized)  # biases, BN, L2 norm: float32
    assert checkpoint_payload_bytes(ckpt) == weights + 4 * channels + rest
    assert f'parameters {params:,}; effective parameters (a byte counts 1/4) ' \
        f'{params - weights + weights / 4 + channels:,.0f}' in stdout
    assert checkpoint_payload_bytes(ckpt) < size < checkpoint_payload_bytes(ckpt) + 32768
    assert size < 0.26 * 4 * params  # about 4x smaller than float32


@pytest.mark.e2e
def test_int8_checkpoint_evaluates_through_tools_test_like_in_memory(
        dense, quantized, tmp_path):
    from mmengine.runner import Runner, load_checkpoint
    out, _ = quantized
    dump = tmp_path / 'det.pkl'
    result = run_tool('tools/test.py', NARROW, out, '--work-dir', tmp_path,
                      '--out', dump)
    assert result.returncode == 0, result.stderr[-3000:]
    assert 'pascal_voc/mAP' in result.stdout + result.stderr
    with open(dump, 'rb') as f:
        theirs = pickle.load(f)

    reference = in_memory_int8_model(dense)
    loaded = build_detector(load_config(NARROW))
    load_checkpoint(loaded, str(out), map_location='cpu', strict=True)
    for key, value in reference.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    float_model = build_detector(load_config(NARROW))
    load_checkpoint(float_model, str(dense), map_location='cpu', strict=True)
    key = 'backbone.features.fc6.conv.weight'
    assert not torch.equal(float_model.state_dict()[key],
                           reference.state_dict()[key])

    loader = Runner.build_dataloader(load_config(NARROW).test_dataloader)
    ours = []
    with torch.no_grad():
        for batch in loader:
            ours += reference.test_step(batch)
    assert len(ours) == len(theirs) == 1
    for a, b in zip(ours, theirs):
        assert len(a.pred_instances) > 0
        assert torch.equal(a.pred_instances.labels, b['pred_instances']['labels'])
        assert torch.equal(a.pred_instances.bboxes, b['pred_instances']['bboxes'])
        assert torch.equal(a.pred_instances.scores, b['pred_instances']['scores'])


def tool_error(argv) -> str:
    """Run quantize_int8_main in this process; the one-line error it exits with."""
    with pytest.raises(SystemExit) as exit_info:
        quantize_int8_main([str(a) for a in argv])
    return str(exit_info.value.code)


@pytest.mark.e2e
def test_tool_refuses_bad_input_writing_nothing(dense, quantized, tmp_path):
    out = tmp_path / 'out.pth'
    # A truncated checkpoint, compressed or not.
    bad = tmp_path / 'bad.pth'
    bad.write_bytes(quantized[0].read_bytes()[:50_000])
    assert 'bad.pth: truncated, corrupted' in tool_error([NARROW, bad, out])
    # A checkpoint of another model (3 classes, not 20).
    assert ("dense.pth: 'bbox_head.cls_convs.0.0.weight' has shape "
            "(84, 128, 3, 3), the config's model expects (16, 128, 3, 3)") in \
        tool_error([NARROW, dense, out, '--cfg-options',
                    'model.bbox_head.num_classes=3'])
    # NaN weights.
    state = torch.load(dense, weights_only=True)
    state['state_dict']['neck.extra_layers.1.1.conv.weight'][0, 0, 0, 0] = \
        float('nan')
    nan = tmp_path / 'nan.pth'
    torch.save(state, nan)
    assert ('neck.extra_layers.1.1.conv.weight: cannot quantize a weight '
            'holding NaN') in tool_error([NARROW, nan, out])
    # A model without any dense conv or linear weight.
    assert 'has no dense conv or linear weight' in tool_error(
        [BSF_NARROW, dense, out])
    assert not out.exists()
    # An output that cannot be written: under a file, or a directory.
    blocker = tmp_path / 'a_file'
    blocker.write_text('x')
    assert f'{blocker}/out.pth: cannot write there' in tool_error(
        [NARROW, dense, blocker / 'out.pth'])
    assert f'{tmp_path}: is a directory' in tool_error([NARROW, dense, tmp_path])
    assert sorted(os.listdir(tmp_path)) == ['a_file', 'bad.pth', 'nan.pth']


@pytest.mark.e2e
def test_an_interrupted_save_leaves_the_previous_file_alone(
        dense, tmp_path, monkeypatch):
    out = tmp_path / 'int8.pth'
    out.write_bytes(b'previous')
    real_save = torch.save

    def failing_save(obj, f, *args, **kwargs):
        real_save(obj, f, *args, **kwargs)
        f.truncate(1000)  # half-written, then the process "dies"
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, 'save', failing_save)
    with pytest.raises(KeyboardInterrupt):
        quantize_int8_main([str(NARROW), str(dense), str(out)])
    assert out.read_bytes() == b'previous'
    assert os.listdir(tmp_path) == ['int8.pth']  # the temporary file is gone


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA device')
def test_cuda_codes_equal_cpu_codes():
    weight = torch.randn(16, 8, 3, 3)
    codes, scales = quantize_per_channel(weight.cuda())
    assert codes.device.type == 'cuda'
    ref_codes, ref_scales = quantize_per_channel(weight)
    assert torch.equal(codes.cpu(), ref_codes)
    assert torch.equal(scales.cpu(), ref_scales)
    ckpt = compress_state_dict({'w': weight.cuda()}, {'w': 0}, {})
    assert torch.equal(decompress(ckpt)['state_dict']['w'],
                       fake_quantize_per_channel(weight))
