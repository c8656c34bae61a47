"""The real tools end to end: train -> test -> resume -> load_from -> init_detector."""
import os
import subprocess
import sys

import pytest
import torch

from conftest import (ROOT, TINY_CONFIG, VOC_ROOT, build_detector,
                      load_config, run_tool)
from references import assert_same_detections, predict, run_test_tool


@pytest.mark.e2e
def test_runner_checkpoint_evaluates_in_tools_test(trained):
    """tools/test.py's detections are those of the config's model holding
    the checkpoint's state dict, predicted here."""
    log, theirs = run_test_tool(TINY_CONFIG, trained / 'epoch_2.pth',
                                trained / 'test')
    assert 'loading an MMEngine Runner checkpoint with a full' in log
    cfg = load_config(TINY_CONFIG)
    model = build_detector(cfg)
    state = torch.load(trained / 'epoch_2.pth', weights_only=False)['state_dict']
    model.load_state_dict(state, strict=True)
    assert_same_detections(predict(model, cfg), theirs)


@pytest.mark.e2e
def test_weights_only_mode_refuses_runner_checkpoint(trained):
    result = run_tool('tools/test.py', TINY_CONFIG, trained / 'epoch_2.pth',
                      '--work-dir', trained / 'refuse',
                      env={'FSNET_WEIGHTS_ONLY': '1'})
    assert result.returncode != 0
    assert 'FSNET_WEIGHTS_ONLY=1 forbids' in result.stderr


@pytest.mark.e2e
def test_resume_and_load_from(trained, tmp_path):
    result = run_tool('tools/train.py', TINY_CONFIG, '--work-dir', tmp_path,
                      '--resume', trained / 'epoch_1.pth')
    assert result.returncode == 0, result.stderr[-3000:]
    log = result.stdout + result.stderr
    assert 'resumed epoch: 1, iter: 1' in log
    assert 'Epoch(train) [2][1/1]' in log and 'Epoch(train) [1]' not in log
    meta = torch.load(tmp_path / 'epoch_2.pth', weights_only=False)['meta']
    assert (meta['epoch'], meta['iter']) == (2, 2)
    # load_from without training (0 epochs): the weights the run holds after
    # loading, saved by tests/dist_hooks.py's hook, are the checkpoint's.
    checkpoint = trained / 'epoch_2.pth'
    config = tmp_path / 'load_from.py'
    config.write_text(
        f"_base_ = {str(TINY_CONFIG)!r}\n"
        "custom_imports = dict(imports=['fsnet_mmdet', 'dist_hooks'],\n"
        "                      allow_failed_imports=False)\n"
        "custom_hooks = [dict(type='DumpRankWeightsHook')]\n"
        "train_cfg = dict(max_epochs=0)\n"
        "param_scheduler = []\n"
        f"load_from = {str(checkpoint)!r}\n")
    result = run_tool('tools/train.py', config, '--work-dir',
                      tmp_path / 'load_from',
                      env={'PYTHONPATH': str(ROOT / 'tests')})
    assert result.returncode == 0, result.stderr[-3000:]
    assert f'Load checkpoint from {checkpoint}' in result.stdout + result.stderr
    loaded = torch.load(tmp_path / 'load_from' / 'rank0.pth')
    state = torch.load(checkpoint, weights_only=False)['state_dict']
    assert list(loaded) == list(state)
    for key, value in state.items():
        assert torch.equal(loaded[key], value), key
    assert not list((tmp_path / 'load_from').glob('epoch_*.pth'))  # no training


@pytest.mark.e2e
def test_init_detector_and_inference(trained):
    from mmdet.apis import inference_detector, init_detector

    model = init_detector(str(TINY_CONFIG), str(trained / 'epoch_2.pth'),
                          device='cpu')
    state = torch.load(trained / 'epoch_2.pth', weights_only=False)['state_dict']
    assert list(model.state_dict()) == list(state)
    for key, value in model.state_dict().items():
        assert torch.equal(value.cpu(), state[key]), key
    image = str(VOC_ROOT / 'VOC2007' / 'JPEGImages' / '000001.jpg')
    result = inference_detector(model, image)
    pred = result.pred_instances
    assert pred.bboxes.ndim == 2 and pred.bboxes.shape[1] == 4 and len(pred) > 0
    h, w = result.ori_shape
    assert (pred.bboxes[:, 2] <= w + 1).all() and (pred.bboxes[:, 3] <= h + 1).all()


@pytest.mark.e2e
def test_dist_train_two_cpu_processes_with_gloo(tmp_path):
    # mmengine 0.10.7 calls torch.cuda.set_device unconditionally; our fix
    # lets tools/dist_train.sh (--launcher pytorch) run on CPU with gloo.
    # Batch 2 per process: SSD300-BN's last 1x1 feature map needs BN batch > 1.
    config = ROOT / 'tests' / 'configs' / 'fsnet_ssd300_tiny_dist.py'
    result = subprocess.run(
        ['bash', 'tools/dist_train.sh', str(config), '2', '--work-dir',
         str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=600,
        env=dict(os.environ, PYTHON=sys.executable, PORT='29531',
                 PYTHONPATH=str(ROOT / 'tests')))
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-3000:]
    assert 'Distributed training: True' in log and 'GPU number: 2' in log
    assert 'Epoch(train) [2][1/1]' in log
    rank0 = torch.load(tmp_path / 'rank0.pth')
    rank1 = torch.load(tmp_path / 'rank1.pth')
    saved = torch.load(tmp_path / 'epoch_2.pth', weights_only=False)['state_dict']
    for key, value in rank0.items():
        if key.endswith(('running_mean', 'running_var', 'num_batches_tracked')):
            continue  # per-process BN statistics (sync_bn=None on CPU)
        assert torch.equal(value, rank1[key]), key
        assert torch.equal(value, saved[key]), key
