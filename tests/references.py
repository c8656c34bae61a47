"""Independent references the tests share (imported like conftest).

- What ``tools/test.py --out`` dumped, against the in-process model's
  ``test_step`` on the same images: the tool's detections, not only its exit
  code or its printed mAP.
- The least-squares FS summary (each summary element the mean of the dense
  weights that map to it), the projection residual and the multiplicity of
  every summary element, by explicit Python loops over the weights: not
  through ``project_filters``, ``fs_projection`` or ``multiplicity``.
- An FSConv's filters by the paper's block formula (Algorithm 1), one
  element at a time: not through ``filter_index``.
"""
import pickle
from pathlib import Path

import torch

from conftest import run_tool


# ------------------------------------------------------------- detections
def run_test_tool(config, checkpoint, work_dir, *cfg_options):
    """``tools/test.py CONFIG CHECKPOINT --out``: (its log, its detections).

    Checks that it ran and printed the VOC mAP."""
    dump = Path(work_dir) / 'detections.pkl'
    args = ['tools/test.py', config, checkpoint, '--work-dir', work_dir,
            '--out', dump]
    if cfg_options:
        args += ['--cfg-options', *cfg_options]
    result = run_tool(*args)
    assert result.returncode == 0, result.stderr[-3000:]
    log = result.stdout + result.stderr
    assert 'pascal_voc/mAP' in log
    with open(dump, 'rb') as f:
        return log, pickle.load(f)


def predict(model, cfg):
    """``model.test_step`` (eval mode, no gradient) over every batch of
    ``cfg.test_dataloader``: the images tools/test.py evaluates."""
    from mmengine.runner import Runner

    model.eval()
    samples = []
    with torch.no_grad():
        for batch in Runner.build_dataloader(cfg.test_dataloader):
            samples += model.test_step(batch)
    return samples


def assert_same_detections(ours, theirs):
    """The same images, each with at least one detection, and the same
    labels, boxes and scores, bit for bit."""
    assert len(ours) == len(theirs) >= 1
    for a, b in zip(ours, theirs):
        assert a.img_path == b['img_path']
        pred, dumped = a.pred_instances, b['pred_instances']
        assert len(pred) > 0, f'{a.img_path}: no detection to compare'
        for key in ('labels', 'bboxes', 'scores'):
            assert torch.equal(pred[key], dumped[key]), (a.img_path, key)


# ------------------------------------------------------------- summaries
def _groups(weight, index, numel):
    """Per summary element, the list of the dense weights that map to it."""
    groups = [[] for _ in range(numel)]
    for w, j in zip(weight.detach().reshape(-1).tolist(),
                    index.reshape(-1).tolist()):
        groups[j].append(w)
    return groups


def group_means(weight, index, numel):
    """The least-squares summary, element by element: the mean of the dense
    weights ``w[t]`` with ``index[t] == j`` (0 where none); float64, flat."""
    return torch.tensor([sum(g) / len(g) if g else 0.0
                         for g in _groups(weight, index, numel)],
                        dtype=torch.float64)


def projection_residual_loop(weight, index):
    """``||W - P(W)||^2``: every weight's squared distance to the mean of
    the weights sharing its summary element."""
    numel = int(index.max()) + 1
    total = 0.0
    for g in _groups(weight, index, numel):
        if g:
            mean = sum(g) / len(g)
            total += sum((w - mean) ** 2 for w in g)
    return total


def element_counts(index, numel):
    """How many filter elements read each summary element, by a loop."""
    counts = [0] * numel
    for j in index.reshape(-1).tolist():
        counts[j] += 1
    return torch.tensor(counts)


def fs_layers(model):
    """The model's FSConv / FSLinear layers by name."""
    from fsnet_mmdet import FSConv, FSLinear
    return {n: m for n, m in model.named_modules()
            if isinstance(m, (FSConv, FSLinear))}


def assert_projected(fs_model, dense_state, fs_state, loop_limit=None):
    """``fs_state`` is ``dense_state`` made to fit ``fs_model``: every FS
    layer's ``weight`` became its ``summary``, each element the mean of the
    dense weights that map to it (:func:`group_means`; a layer of more than
    ``loop_limit`` weights: the same means by a float64 bincount, to keep
    the loop's time down); every other entry unchanged. Returns the number
    of layers checked."""
    layers = fs_layers(fs_model)
    assert layers
    renamed = {f'{n}.weight': f'{n}.summary' for n in layers}
    assert set(fs_state) == {renamed.get(k, k) for k in dense_state}
    for key, value in dense_state.items():
        if key not in renamed:
            assert torch.equal(fs_state[key], value), key
    for name, layer in layers.items():
        weight, index = dense_state[f'{name}.weight'], layer.index
        numel = layer.summary.numel()
        if loop_limit is None or weight.numel() <= loop_limit:
            expected = group_means(weight, index, numel)
        else:
            flat = index.reshape(-1).long()
            expected = torch.bincount(flat, weight.reshape(-1).double(), numel)
            expected /= torch.bincount(flat, minlength=numel).clamp(min=1)
        summary = fs_state[f'{name}.summary']
        assert summary.shape == layer.summary.shape, name
        torch.testing.assert_close(summary.reshape(-1).double(), expected,
                                   rtol=1e-5, atol=1e-6, msg=name)
    return len(layers)


# --------------------------------------------------------------- filters
def channel_of(p, geometry):
    """Output channel of grid filter p: p itself, or with interleave g the
    channel a * g + c of p = c * (K / g) + a."""
    per = geometry.num_filters // geometry.interleave
    return (p % per) * geometry.interleave + p // per


def slow_positions(geometry):
    """Algorithm 1 by explicit loops: the flat summary position read by
    every filter element, (K, C, S1, S2). Filter (k1, k2, k3) is the block
    at (k3 z, k1 x, k2 y) of the summary, with circular wrap-around."""
    (n1, n2, n3), (x, y, z) = geometry.sampling, geometry.strides
    cm, hm, wm = geometry.summary_shape
    c, (s1, s2) = geometry.in_channels, geometry.kernel_size
    positions = [0] * (n1 * n2 * n3 * c * s1 * s2)
    for k1 in range(n1):
        for k2 in range(n2):
            for k3 in range(n3):
                k = channel_of((k1 * n2 + k2) * n3 + k3, geometry)
                for ch in range(c):
                    for i in range(s1):
                        for j in range(s2):
                            positions[((k * c + ch) * s1 + i) * s2 + j] = (
                                ((k3 * z + ch) % cm * hm + (k1 * x + i) % hm)
                                * wm + (k2 * y + j) % wm)
    return torch.tensor(positions).view(n1 * n2 * n3, c, s1, s2)


def slow_filters(summary, geometry):
    """The filters of ``summary`` at :func:`slow_positions`."""
    assert tuple(summary.shape) == tuple(geometry.summary_shape)
    return summary.reshape(-1)[slow_positions(geometry)]


#: Named FSConv layers: against the loop filters in
#: tests/layers/test_fsconv_properties.py (with random layers), against the
#: CPU in tests/layers/test_cuda.py.
FSCONV_CASES = [
    # in, out, kernel, stride, padding, dilation, fs options
    (8, 16, 3, 1, 1, 1, {}),
    (3, 12, 3, 2, 1, 1, {}),                       # C = 3, not divisible by K3
    (16, 32, 3, 1, 6, 6, {}),                      # dilated, like SSD's fc6
    (16, 24, 1, 1, 0, 1, {}),                      # 1x1, ratio 8
    (8, 6, (3, 5), (2, 1), (1, 2), (1, 2), {}),    # rectangular, mixed
    (12, 20, 5, 1, 2, 1, {'sampling': (2, 5, 2)}),
    (8, 8, 3, 1, 1, 1, {'strides': (1, 3, 4)}),
    (16, 8, 1, 2, 0, 1, {'pointwise_ratio': 4}),
    (8, 16, 7, 2, 3, 1, {'k3': 8}),
    (8, 28, 3, 1, 1, 1, {}),                       # K1 = 1: stride 3 along it
    (8, 28, 3, 1, 1, 1, {'self_wrap': True}),      # the same, wrapping onto itself
    (8, 16, 3, 1, 1, 1, {'k3_scale': 2.0}),
    (8, 24, 3, 1, 1, 1, {'interleave': 4}),       # box deltas of 6 anchors
    (8, 28, 3, 1, 1, 1, {'interleave': 7}),       # 6 classes + bg, 4 anchors
]
