"""Output reconstruction and BatchNorm re-estimation after a projection."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fsnet_mmdet import FSConv
from fsnet_mmdet.conversion.reconstruction import (conv_patches, dense_twin,
                                                   fit_summary, reconstruct)
from fsnet_mmdet.conversion.recalibration import recalibrate_batchnorm


class Detector(nn.Module):
    """The parts of an mmdet detector the two functions use."""

    def __init__(self, net):
        super().__init__()
        self.net = net
        self.data_preprocessor = lambda data, training=False: data

    def forward(self, inputs, mode='tensor'):
        return self.net(inputs)


def pair(bias=False):
    torch.manual_seed(0)
    dense = nn.Sequential(nn.Conv2d(6, 16, 3, padding=1, bias=bias),
                          nn.BatchNorm2d(16), nn.ReLU(),
                          nn.Conv2d(16, 8, 3, stride=2, dilation=2, padding=2,
                                    bias=bias))
    fs = nn.Sequential(FSConv(6, 16, 3, padding=1, bias=bias, interleave=4),
                       nn.BatchNorm2d(16), nn.ReLU(),
                       FSConv(16, 8, 3, stride=2, dilation=2, padding=2,
                              bias=bias))
    return Detector(dense), Detector(fs)


def test_patches_reproduce_the_convolution():
    conv = nn.Conv2d(5, 7, 3, stride=2, padding=2, dilation=2, bias=False)
    x = torch.randn(5, 11, 9)
    y = conv(x[None])[0].reshape(7, -1)
    positions = torch.tensor([0, 3, 7, y.shape[1] - 1])
    patches = conv_patches(conv, x, positions)
    torch.testing.assert_close(patches @ conv.weight.reshape(7, -1).T,
                               y[:, positions].T)


def test_fit_summary_is_the_least_squares_solution():
    """Against torch.linalg.lstsq on the explicit design matrix."""
    torch.manual_seed(0)
    layer = FSConv(4, 8, 3, interleave=2)
    k, numel = 8, layer.summary.numel()
    index = layer.index.reshape(k, -1).long()
    x = torch.randn(300, index.shape[1], dtype=torch.float64)
    y = torch.randn(300, k, dtype=torch.float64)
    # vec(X W^T) = M s with M[(p, k), e] = sum_d X[p, d] [index[k, d] == e]
    onehot = F.one_hot(index, numel).double()                  # (K, D, numel)
    design = torch.einsum('pd,kde->pke', x, onehot).reshape(-1, numel)
    expected = torch.linalg.lstsq(design, y.reshape(-1, 1)).solution[:, 0]
    s = fit_summary(x.T @ x, y.T @ x, index, torch.zeros(numel, dtype=torch.float64),
                    ridge=1e-12, iters=2000, tol=1e-12)
    torch.testing.assert_close(s, expected, atol=1e-6, rtol=1e-6)


MIX = torch.randn(6, 6, generator=torch.Generator().manual_seed(1)) * torch.tensor(
    [1.0, 0.5, 0.25, 0.1, 0.05, 0.02])


def images(n, generator):
    """Correlated inputs, as images are: channels mixed with a decaying
    spectrum (one mixing for all images), spatially smooth. (On white inputs
    the output fit and the weight projection coincide: X^T X is a multiple
    of the identity.)"""
    mix = MIX
    z = torch.randn(n, 6, 14, 14, generator=generator)
    return F.avg_pool2d(torch.einsum('ij,njhw->nihw', mix, z), 3, 1)


@pytest.mark.parametrize('bias', [False, True])
def test_reconstruction_lowers_the_output_error_of_every_layer(bias):
    dense, fs = pair(bias)
    fs.load_state_dict(dense.state_dict())  # the weight projection
    gen = torch.Generator().manual_seed(0)
    batches = [dict(inputs=images(4, gen)) for _ in range(3)]
    x = images(4, gen)
    dense.eval(), fs.eval()
    with torch.no_grad():
        projected_error = (fs(x) - dense(x)).norm() / dense(x).norm()
    report = reconstruct(fs, dense, batches, positions_per_image=64)
    assert [name for name, _, _ in report] == ['net.0', 'net.3']
    assert all(after < before for _, before, after in report)
    with torch.no_grad():
        error = (fs(x) - dense(x)).norm() / dense(x).norm()
    assert error < 0.8 * projected_error  # on images it did not fit on


def test_reconstruction_runs_the_dense_model_twice_per_batch():
    """The dense outputs do not change while the FS layers are fitted: two
    forwards per batch (sizes, then the sampled outputs), not one per layer;
    the FS model still runs once per layer and batch (up to that layer)."""
    torch.manual_seed(0)
    dense, fs = (Detector(nn.Sequential(*(conv(c_in, c_out, 3, padding=1)
                                          for c_in, c_out in ((6, 8), (8, 8), (8, 4)))))
                 for conv in (nn.Conv2d, FSConv))
    fs.load_state_dict(dense.state_dict())
    calls = {'dense': 0, 'fs': 0}
    for key, model in (('dense', dense), ('fs', fs)):
        model.net.register_forward_pre_hook(
            lambda m, args, key=key: calls.__setitem__(key, calls[key] + 1))
    gen = torch.Generator().manual_seed(0)
    reconstruct(fs, dense, [dict(inputs=images(2, gen)) for _ in range(3)],
                positions_per_image=16)
    assert calls == {'dense': 2 * 3, 'fs': 3 * 3}  # 3 layers, 3 batches


def test_dense_twin_is_the_dense_model_of_the_checkpoint():
    dense, fs = pair(bias=True)
    twin = dense_twin(fs, dense.state_dict())
    assert isinstance(twin.net[0], nn.Conv2d) and not isinstance(twin.net[0], FSConv)
    assert isinstance(fs.net[0], FSConv)  # the FS model is left alone
    x = torch.randn(2, 6, 10, 10)
    dense.eval()
    torch.testing.assert_close(twin(x), dense(x))
    with pytest.raises(RuntimeError):
        dense_twin(fs, {})


def test_batchnorm_statistics_are_the_mean_over_the_batches():
    dense, _ = pair()
    bn = dense.net[1]
    batches = [dict(inputs=torch.randn(4, 6, 8, 8) * (i + 1)) for i in range(3)]
    with torch.no_grad():
        feats = [dense.net[0](b['inputs']) for b in batches]
    dense.eval()
    assert recalibrate_batchnorm(dense, batches, 2) == 2
    expected_mean = torch.stack([f.mean((0, 2, 3)) for f in feats[:2]]).mean(0)
    expected_var = torch.stack([f.var((0, 2, 3)) for f in feats[:2]]).mean(0)
    torch.testing.assert_close(bn.running_mean, expected_mean)
    torch.testing.assert_close(bn.running_var, expected_var)
    assert bn.momentum == 0.1 and not dense.training
    before = bn.running_mean.clone()
    with pytest.raises(ValueError, match='no batch to recalibrate'):
        recalibrate_batchnorm(dense, [], 2)
    torch.testing.assert_close(bn.running_mean, before)
    with pytest.raises(ValueError, match='num_batches must be an int >= 1'):
        recalibrate_batchnorm(dense, batches, 0)
    with pytest.raises(ValueError, match='has no BatchNorm layer'):
        recalibrate_batchnorm(Detector(nn.Conv2d(6, 6, 1)), batches, 1)
