"""Property-based tests of FSConv geometry (hypothesis)."""
import math

import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from fsnet_mmdet import FSConv
from fsnet_mmdet.layers.extraction import fold_filter_grad, foldable, reduction_matrix
from fsnet_mmdet.layers.geometry import resolve_geometry
from fsnet_mmdet.layers.index import filter_index, multiplicity


def divisors(n):
    return [d for d in range(1, n + 1) if n % d == 0]


@st.composite
def layers(draw):
    """A random conv layer and FS options (valid by construction)."""
    cin = draw(st.integers(1, 12))
    k = draw(st.integers(1, 24))
    s1, s2 = draw(st.integers(1, 5)), draw(st.integers(1, 5))
    conv = dict(stride=(draw(st.integers(1, 3)), draw(st.integers(1, 3))),
                dilation=(draw(st.integers(1, 3)), draw(st.integers(1, 3))),
                padding=(draw(st.integers(0, 3)), draw(st.integers(0, 3))),
                bias=draw(st.booleans()))
    opts = {}
    if draw(st.booleans()):
        k3 = draw(st.sampled_from(divisors(k)))
        k1 = draw(st.sampled_from(divisors(k // k3)))
        opts['sampling'] = (k1, k // k3 // k1, k3)
        opts['strides'] = (draw(st.integers(1, s1)), draw(st.integers(1, s2)),
                           draw(st.integers(1, cin)))
    return cin, k, (s1, s2), conv, opts


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(layers(), st.integers(0, 2**16))
def test_forward_matches_reference_and_conv2d_shape(layer, seed):
    cin, k, ks, conv, opts = layer
    torch.manual_seed(seed)
    fs = FSConv(cin, k, ks, **conv, **opts).double()
    (d1, d2) = conv['dilation']
    x = torch.randn(2, cin, 6 + d1 * (ks[0] - 1), 7 + d2 * (ks[1] - 1),
                    dtype=torch.double)
    # Reference: the paper's block formula by explicit index arithmetic.
    g = fs.geometry
    (n1, n2, n3), (sx, sy, sz) = g.sampling, g.strides
    cm, hm, wm = g.summary_shape
    ref = torch.empty(g.filter_shape, dtype=torch.double)
    for kk in range(k):
        k1, rest = divmod(kk, n2 * n3)
        k2, k3 = divmod(rest, n3)
        for c in range(cin):
            for i in range(ks[0]):
                for j in range(ks[1]):
                    ref[kk, c, i, j] = fs.summary[(k3 * sz + c) % cm,
                                                  (k1 * sx + i) % hm,
                                                  (k2 * sy + j) % wm]
    out = fs(x)
    expected = F.conv2d(x, ref, fs.bias, conv['stride'], conv['padding'],
                        conv['dilation'])
    torch.testing.assert_close(out, expected)
    assert out.shape == nn.Conv2d(cin, k, ks, **conv)(x.float()).shape


@settings(max_examples=80, deadline=None)
@given(layers())
def test_every_summary_element_is_used(layer):
    cin, k, ks, _, opts = layer
    g = resolve_geometry(cin, k, ks, **opts)
    counts = multiplicity(filter_index(g), math.prod(g.summary_shape))
    assert counts.min() >= 1
    assert counts.sum() == k * cin * ks[0] * ks[1]


@settings(max_examples=60, deadline=None)
@given(layers())
def test_block_fold_equals_scatter(layer):
    cin, k, ks, _, opts = layer
    g = resolve_geometry(cin, k, ks, **opts)
    if not foldable(g):
        return
    index = filter_index(g)
    grad = torch.randn(index.shape, dtype=torch.double)
    expected = torch.zeros(math.prod(g.summary_shape), dtype=torch.double)
    expected.index_add_(0, index.reshape(-1).long(), grad.reshape(-1))
    torch.testing.assert_close(fold_filter_grad(grad, g).reshape(-1), expected)


@settings(max_examples=60, deadline=None)
@given(layers(), st.booleans())
def test_reduction_matrix_is_scatter_add_then_row_weights(layer, mean):
    cin, k, ks, _, opts = layer
    g = resolve_geometry(cin, k, ks, **opts)
    index, numel = filter_index(g), math.prod(g.summary_shape)
    count = multiplicity(index, numel).double()
    weights = 1 / count if mean else torch.ones(numel, dtype=torch.double)
    grad = torch.randn(index.shape, dtype=torch.double)
    expected = torch.zeros(numel, dtype=torch.double)
    expected.index_add_(0, index.reshape(-1).long(), grad.reshape(-1))
    matrix = reduction_matrix(index, weights)
    assert matrix.layout == torch.sparse_csr and matrix.shape == (numel, index.numel())
    torch.testing.assert_close(matrix @ grad.reshape(-1), expected * weights)


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 12), st.integers(1, 24), st.integers(1, 5),
       st.integers(1, 30), st.integers(1, 30))
def test_strides_beyond_the_filter_are_rejected(cin, k, s, x, z):
    import pytest

    if x <= s and z <= cin:
        resolve_geometry(cin, k, (s, s), sampling=(1, 1, k), strides=(x, 1, z))
    else:
        with pytest.raises(ValueError, match='exceeds the filter size'):
            resolve_geometry(cin, k, (s, s), sampling=(1, 1, k),
                             strides=(x, 1, z))
