"""The CUDA path against the CPU path, which test_fsconv.py, test_fslinear.py
and test_wq.py check against the independent references: FSConv (every
geometry of test_fsconv, the fold and sparse-product backwards, DFSNet's
relaxation), FSLinear, WQ codes, and a whole FSNet-1 SSD300's loss, gradients
and predictions (mmcv's CUDA NMS included). Skipped without a CUDA device."""
import copy

import pytest
import torch

from conftest import build_detector, load_config, voc_batch
from fsnet_mmdet import FSConv, FSLinear
from fsnet_mmdet.layers.wq import quantize
from references import FSCONV_CASES as CASES

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(),
                                reason='needs a CUDA device')

# float64 is the exactness check; float32 is what training runs in (its
# reductions, summed in another order on the GPU, differ by ~1e-6 relative).
TOL = {torch.float64: 1e-10, torch.float32: 1e-4}


def assert_near(have, want, rel, what=''):
    """``have`` on the CPU, within ``rel`` of ``want`` in relative norm."""
    have = have.cpu()
    assert have.shape == want.shape and have.dtype == want.dtype, what
    err = ((have - want).norm() / want.norm().clamp_min(1e-30)).item()
    assert err <= rel, f'{what}: relative error {err:.2e} > {rel:.0e}'


@pytest.fixture(autouse=True)
def _no_tf32(monkeypatch):
    # TF32 convolutions round inputs to 10 mantissa bits: not what is compared.
    monkeypatch.setattr(torch.backends.cudnn, 'allow_tf32', False)
    monkeypatch.setattr(torch.backends.cuda.matmul, 'allow_tf32', False)


def forward_backward(layer, x):
    layer.zero_grad()
    out = layer(x)
    (out ** 2).sum().backward()
    with torch.no_grad():
        evaluated = layer.eval()(x)
    layer.train()
    # Copies: moving the layer moves its .grad tensors in place.
    return out.detach().cpu(), evaluated.cpu(), {
        n: p.grad.to('cpu', copy=True) for n, p in layer.named_parameters()}


def assert_same_on_cuda(layer, x, dtype):
    expected = forward_backward(layer, x)
    got = forward_backward(layer.cuda(), x.cuda())  # the layer itself moves
    for what, want, have in zip(('train', 'eval'), expected[:2], got[:2]):
        assert_near(have, want, TOL[dtype], what)
    assert got[2].keys() == expected[2].keys()
    for name in expected[2]:
        assert_near(got[2][name], expected[2][name], TOL[dtype], name)
    back = forward_backward(layer.cpu(), x)  # caches follow the device back
    assert_near(back[2]['summary'], expected[2]['summary'], TOL[dtype])


@pytest.mark.parametrize('dtype', [torch.float64, torch.float32])
@pytest.mark.parametrize('cin,cout,ks,stride,pad,dil,opts', CASES + [
    (512, 256, 3, 1, 1, 1, {}),              # Eq. 2 by the block fold
    (8, 16, 3, 1, 1, 1, {'dfs_radius': 1}),  # DFSNet searching
    (8, 16, 3, 1, 1, 1, {'layout': '1d'}),
])
def test_fsconv_cuda_matches_cpu(cin, cout, ks, stride, pad, dil, opts, dtype):
    conv = FSConv(cin, cout, ks, stride, pad, dil, **opts).to(dtype)
    if cin == 512:
        assert conv._fold is not None
    x = torch.randn(2, cin, 11, 13, dtype=dtype)
    assert_same_on_cuda(conv, x, dtype)
    if conv._fold is None and not conv.searching:
        # The sparse Eq. 2 product was built for CUDA, then again for CPU.
        assert conv._reduction_cache is not None


def test_in_place_init_after_moving_to_cuda():
    # MMEngine's Runner moves the model to the GPU before init_weights, whose
    # initializers write `weight` in place and then read `bias`: the write
    # reaches the summary on the GPU as it does on the CPU.
    from mmengine.model import constant_init, kaiming_init

    layer = FSConv(8, 16, 3).cuda()
    kaiming_init(layer)
    constant_init(layer, 0.5, bias=1)
    assert layer.summary.is_cuda
    assert (layer.summary == 0.5).all() and (layer.bias == 1).all()
    dense = torch.randn(16, 8, 3, 3)
    layer.weight.copy_(dense.cuda())
    expected = FSConv(8, 16, 3)
    expected.weight.copy_(dense)
    assert torch.equal(layer.summary.cpu(), expected.summary)


@pytest.mark.parametrize('dtype', [torch.float64, torch.float32])
def test_fslinear_cuda_matches_cpu(dtype):
    layer = FSLinear(96, 40).to(dtype)
    assert_same_on_cuda(layer, torch.randn(5, 96, dtype=dtype), dtype)


def test_wq_codes_same_on_cuda():
    summary = FSConv(64, 128, 3).summary.detach()
    codes, lo, hi = quantize(summary)
    codes_cuda, lo_cuda, hi_cuda = quantize(summary.cuda())
    assert codes_cuda.is_cuda
    assert torch.equal(codes_cuda.cpu(), codes) and (lo, hi) == (lo_cuda, hi_cuda)


def test_fsnet_ssd300_on_cuda_matches_cpu():
    cfg = load_config('configs/fsnet_ssd300_voc.py')
    model = build_detector(cfg).eval()  # BN running statistics on both
    data = voc_batch(cfg.test_pipeline)

    def run(model):
        model.zero_grad()
        batch = model.data_preprocessor(copy.deepcopy(data), False)
        inputs, samples = batch['inputs'], batch['data_samples']
        loss, _ = model.parse_losses(model.loss(inputs, samples))
        loss.backward()
        grads = {n: p.grad.to('cpu', copy=True)
                 for n, p in model.named_parameters()}
        with torch.no_grad():
            outputs = model(inputs, mode='tensor')  # (cls_scores, bbox_preds)
            preds = model.predict(inputs, samples)
        return loss.item(), grads, outputs, samples, preds

    loss, grads, outputs, _, _ = run(model)
    loss_cuda, grads_cuda, outputs_cuda, samples, preds = run(model.cuda())
    assert loss_cuda == pytest.approx(loss, rel=1e-4)
    assert grads_cuda.keys() == grads.keys()
    for name, grad in grads.items():  # through 23 layers and BN: 1e-3
        assert_near(grads_cuda[name], grad, 1e-3, name)
    for want, have in zip(outputs, outputs_cuda):  # cls_scores, bbox_preds
        for level, level_cuda in zip(want, have):
            assert_near(level_cuda, level, 1e-4)
    assert all(p.pred_instances.bboxes.is_cuda and len(p.pred_instances)
               for p in preds)
    # mmcv's CUDA NMS against its CPU NMS on the same head outputs.
    metas = [s.metainfo for s in samples]
    head = model.bbox_head
    on_cuda = head.predict_by_feat(*outputs_cuda, batch_img_metas=metas,
                                   rescale=True)
    on_cpu = head.predict_by_feat(
        *[[t.cpu() for t in level] for level in outputs_cuda],
        batch_img_metas=metas, rescale=True)
    for want, have in zip(on_cpu, on_cuda):
        assert len(have) == len(want) > 0
        torch.testing.assert_close(have.bboxes.cpu(), want.bboxes,
                                   rtol=1e-5, atol=1e-3)
        torch.testing.assert_close(have.scores.cpu(), want.scores)
        assert torch.equal(have.labels.cpu(), want.labels)
