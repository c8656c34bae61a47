"""BF16OptimWrapper: bfloat16 autocast training on CPU, float32 parameters."""
import copy

import pytest
import torch
from mmengine.optim import OptimWrapper
from mmengine.registry import OPTIM_WRAPPERS
from torch import nn

import fsnet_mmdet  # noqa: F401  (registers BF16OptimWrapper, FSConv)
from fsnet_mmdet import FSConv


def _model() -> nn.Module:
    torch.manual_seed(0)
    # No conv bias before BN: its exact gradient is 0, all rounding noise.
    return nn.Sequential(FSConv(8, 16, 3, padding=1, bias=False),
                         nn.BatchNorm2d(16),
                         nn.ReLU(), nn.Conv2d(16, 4, 1))


def _step(model, wrapper_type):
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    wrapper = OPTIM_WRAPPERS.build(dict(type=wrapper_type, optimizer=optimizer))
    x = torch.randn(2, 8, 12, 12, generator=torch.Generator().manual_seed(1))
    with wrapper.optim_context(model):
        out = model(x)
        loss = out.float().pow(2).mean()
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    wrapper.step()
    wrapper.zero_grad()
    return out, loss, grads


def test_bf16_wrapper_computes_convs_in_bf16_and_keeps_fp32_parameters():
    model = _model()
    reference = copy.deepcopy(model)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    out, loss, grads = _step(model, 'BF16OptimWrapper')
    ref_out, ref_loss, ref_grads = _step(reference, 'OptimWrapper')
    assert out.dtype == torch.bfloat16 and ref_out.dtype == torch.float32
    # Same computation, bfloat16 rounding (8 bits of mantissa): close, not equal.
    assert not torch.equal(out.float(), ref_out)
    torch.testing.assert_close(out.float(), ref_out, rtol=0.05, atol=0.05)
    torch.testing.assert_close(loss, ref_loss, rtol=0.02, atol=0.0)
    for name, param in model.named_parameters():
        assert param.dtype == torch.float32
        assert not torch.equal(param, before[name]), name  # the step happened
        cos = nn.functional.cosine_similarity(
            grads[name].flatten(), ref_grads[name].flatten(), dim=0)
        assert cos > 0.99, (name, float(cos))
    # The FS summary's gradient is Eq. 2's, in float32, like the reference's.
    assert grads['0.summary'].dtype == torch.float32


def test_bf16_wrapper_is_an_optim_wrapper_and_outside_its_context_fp32():
    model = _model()
    wrapper = OPTIM_WRAPPERS.build(dict(
        type='BF16OptimWrapper',
        optimizer=torch.optim.SGD(model.parameters(), lr=0.1)))
    assert isinstance(wrapper, OptimWrapper)
    assert model(torch.randn(1, 8, 6, 6)).dtype == torch.float32


def test_bf16_wrapper_rejects_unknown_options():
    model = _model()
    with pytest.raises(TypeError, match='dtype'):
        OPTIM_WRAPPERS.build(dict(
            type='BF16OptimWrapper', dtype='float16',
            optimizer=torch.optim.SGD(model.parameters(), lr=0.1)))
