"""Property-based tests of FSConv geometry (hypothesis), each with the
named layers of the plain tests as explicit examples."""
import math

import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from torch import nn

from fsnet_mmdet import FSConv
from fsnet_mmdet.layers.extraction import fold_filter_grad, foldable, reduction_matrix
from fsnet_mmdet.layers.geometry import resolve_geometry
from fsnet_mmdet.layers.index import filter_index, multiplicity
from references import element_counts, slow_filters, slow_positions
from references import FSCONV_CASES as CASES


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
    if draw(st.booleans()):
        opts['interleave'] = draw(st.sampled_from(divisors(k)))
    return cin, k, (s1, s2), conv, opts


def two(v):
    return tuple(v) if isinstance(v, tuple) else (v, v)


def named(cin, cout, ks, stride=1, pad=0, dil=1, opts=None):
    """A layer of the plain tests in :func:`layers`' form."""
    return (cin, cout, two(ks), dict(stride=two(stride), padding=two(pad),
                                     dilation=two(dil), bias=True), opts or {})


def with_examples(*cases, **fixed):
    """``hypothesis.example(layer=case, **fixed)`` for each case."""
    def decorate(test):
        for case in cases:
            test = example(layer=case, **fixed)(test)
        return test
    return decorate


#: test_fsconv.py's named layers (in, out, kernel, stride, padding,
#: dilation, FS options).
FORWARD_CASES = [named(*case) for case in CASES]
#: Named layers of the block fold (the large ones of SSD300 among them).
FOLD_CASES = [
    named(64, 64, 3), named(3, 64, 3), named(512, 126, 3), named(32, 16, 1),
    named(8, 4, 1),                                  # ratio 8 > K: shifts wrap
    named(8, 8, 3, opts={'sampling': (1, 1, 8), 'strides': (1, 1, 1)}),  # K1 x < S1
    named(12, 20, 5, opts={'sampling': (2, 5, 2), 'strides': (3, 2, 4)}),
    named(16, 24, (3, 1), opts={'k3': 2}),
]


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(layers(), st.integers(0, 2**16))
@with_examples(*FORWARD_CASES, seed=0)
def test_forward_matches_loop_filters_and_conv2d(layer, seed):
    cin, k, ks, conv, opts = layer
    torch.manual_seed(seed)
    fs = FSConv(cin, k, ks, **conv, **opts).double()
    (d1, d2) = conv['dilation']
    x = torch.randn(2, cin, 6 + d1 * (ks[0] - 1), 7 + d2 * (ks[1] - 1),
                    dtype=torch.double)
    # Reference: the paper's block formula by explicit index arithmetic.
    ref = slow_filters(fs.summary.detach(), fs.geometry)
    expected = F.conv2d(x, ref, fs.bias, conv['stride'], conv['padding'],
                        conv['dilation'])
    out = fs(x)
    torch.testing.assert_close(out, expected)
    assert out.shape == nn.Conv2d(cin, k, ks, **conv)(x.float()).shape
    with torch.no_grad():  # the eval path (cached filters)
        torch.testing.assert_close(fs.eval()(x), expected)


@settings(max_examples=80, deadline=None)
@given(layers())
@with_examples(named(6, 12, 3, opts={'sampling': (2, 3, 2), 'strides': (2, 1, 3)}),
               *FORWARD_CASES)
def test_index_and_multiplicity_match_loops(layer):
    """filter_index is the block formula's positions; every summary element
    is read, as many times as an explicit count over them says."""
    cin, k, ks, _, opts = layer
    g = resolve_geometry(cin, k, ks, **opts)
    numel = math.prod(g.summary_shape)
    index = filter_index(g)
    assert torch.equal(index.long(), slow_positions(g))
    counts = element_counts(index, numel)
    assert torch.equal(multiplicity(index, numel), counts)
    assert counts.min() >= 1


@settings(max_examples=60, deadline=None)
@given(layers())
@with_examples(*FOLD_CASES)
def test_block_fold_equals_scatter(layer):
    """The block fold (large layers' Eq. 2 sum) is the index_add of the
    filter gradient over the index; it applies exactly where z divides C in
    grid order (every default geometry)."""
    cin, k, ks, _, opts = layer
    g = resolve_geometry(cin, k, ks, **opts)
    assert foldable(g) == (cin % g.strides[2] == 0 and g.interleave == 1)
    if ('strides' not in opts and g.interleave == 1) or layer in FOLD_CASES:
        assert foldable(g)
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
    count = element_counts(index, numel).double()
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
