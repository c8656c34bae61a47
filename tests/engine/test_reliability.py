"""Reliability: exact resume, bad checkpoints, bad configs, bad data, NaN."""
import os
import shutil
import signal
import subprocess
import sys
import time
import types

import pytest
import torch

from conftest import ROOT, TINY_CONFIG, VOC_ROOT, load_config, run_tool
from fsnet_mmdet.engine.validate import check_config

EXACT = ROOT / 'tests' / 'configs' / 'fsnet_ssd300_tiny_exact.py'


@pytest.mark.e2e
def test_interrupted_training_resumes_exactly(tmp_path):
    full = tmp_path / 'full'
    assert run_tool('tools/train.py', EXACT, '--work-dir', full).returncode == 0
    killed = tmp_path / 'killed'
    proc = subprocess.Popen([sys.executable, 'tools/train.py', str(EXACT),
                             '--work-dir', str(killed)], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not (killed / 'epoch_2.pth').exists() and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert (killed / 'epoch_2.pth').exists() and not (killed / 'epoch_4.pth').exists()
    result = run_tool('tools/train.py', EXACT, '--work-dir', killed,
                      '--resume', killed / 'epoch_2.pth')
    assert result.returncode == 0, result.stderr[-3000:]
    a = torch.load(full / 'epoch_4.pth', weights_only=False)
    b = torch.load(killed / 'epoch_4.pth', weights_only=False)
    assert a['meta']['iter'] == b['meta']['iter'] == 4
    for key, value in a['state_dict'].items():
        assert torch.equal(value, b['state_dict'][key]), key
    assert not [p for p in os.listdir(killed) if p.endswith('.tmp')]


def test_runner_checkpoint_save_is_atomic(tmp_path):
    from mmengine.runner import runner as runner_module

    target = tmp_path / 'epoch_1.pth'
    runner_module.save_checkpoint({'w': torch.ones(3)}, str(target))
    good = target.read_bytes()
    with pytest.raises(Exception):  # fails half-way through pickling
        runner_module.save_checkpoint({'w': torch.ones(3), 'f': lambda: 0},
                                      str(target))
    assert target.read_bytes() == good and os.listdir(tmp_path) == ['epoch_1.pth']


@pytest.mark.e2e
@pytest.mark.parametrize('damage', ['truncated', 'garbage'])
def test_bad_checkpoint_in_tools_test_names_the_file(trained, tmp_path, damage):
    bad = tmp_path / 'bad.pth'
    data = (trained / 'epoch_2.pth').read_bytes()
    bad.write_bytes(data[:len(data) // 2] if damage == 'truncated'
                    else b'\0' * 4096)
    result = run_tool('tools/test.py', TINY_CONFIG, bad, '--work-dir', tmp_path)
    assert result.returncode != 0
    assert f'{bad}: truncated, corrupted or not a torch checkpoint' in result.stderr


@pytest.mark.e2e
def test_mismatched_checkpoint_in_tools_test_names_file_and_layer(trained, tmp_path):
    result = run_tool('tools/test.py', 'configs/fsnet2_ssd300_voc.py',
                      trained / 'epoch_2.pth', '--work-dir', tmp_path,
                      '--cfg-options', f'test_dataloader.dataset.data_root={VOC_ROOT}/')
    assert result.returncode != 0
    assert (f"{trained / 'epoch_2.pth'}: backbone.features.conv1_2.conv.summary: "
            f"checkpoint summary has shape") in result.stderr


BAD_CONFIGS = [
    ({'model.backbone.conv_cfg.sampling': (1, 1, 3)}, 'K1 \\* K2 \\* K3 must equal'),
    ({'model.backbone.conv_cfg.preset': 'fsnet9'}, "preset='fsnet9' is unknown"),
    ({'model.neck.conv_cfg.k33': 2}, 'k33 is not an FSConv option'),
    ({'model.fs_convert': dict(exclude=['head.*'])},
     "exclude pattern 'head.\\*' matches no conv or linear layer"),
    ({'model.bbox_head.num_classes': 80}, 'num_classes=80 but .* has 20 classes'),
    ({'train_dataloader.dataset.dataset.datasets.0.data_root': '/nowhere/'},
     'datasets.0.data_root: /nowhere/VOC2007/ImageSets/Main/trainval.txt does not exist'),
    ({'train_dataloader.num_workers': 0, 'train_dataloader.persistent_workers': True},
     'persistent_workers=True needs'),
]


@pytest.mark.parametrize('options,match', BAD_CONFIGS)
def test_bad_configs_fail_before_anything_runs(options, match):
    cfg = load_config(TINY_CONFIG, **options)
    with pytest.raises(ValueError, match=match):
        check_config(cfg, str(TINY_CONFIG))


def test_cpu_run_asking_for_nccl_or_syncbn():
    cfg = load_config(TINY_CONFIG)
    with pytest.raises(ValueError, match="backend='nccl' needs CUDA"):
        check_config(cfg, 'c.py', launcher='pytorch')
    cfg.env_cfg.dist_cfg.backend = 'gloo'
    with pytest.raises(ValueError, match='SyncBN runs on GPUs only'):
        check_config(cfg, 'c.py', launcher='pytorch')
    cfg.sync_bn = None
    check_config(cfg, 'c.py', launcher='pytorch')


@pytest.mark.e2e
def test_train_tool_rejects_bad_config_in_one_line(tmp_path):
    start = time.time()
    result = run_tool('tools/train.py', TINY_CONFIG, '--work-dir', tmp_path,
                      '--cfg-options', 'model.backbone.conv_cfg.preset=fsnet9')
    assert result.returncode != 0
    assert result.stderr.strip().splitlines()[-1].startswith('error: ')
    assert 'Traceback' not in result.stderr and 'Epoch(train)' not in result.stdout
    assert time.time() - start < 60


def _voc_copy(tmp_path):
    root = tmp_path / 'VOCdevkit'
    shutil.copytree(VOC_ROOT, root)
    return root


def _dataset(root):
    from mmdet.registry import DATASETS
    from mmengine.registry import init_default_scope

    init_default_scope('mmdet')
    return DATASETS.build(dict(
        type='CheckedVOCDataset', data_root=str(root),
        ann_file='VOC2007/ImageSets/Main/trainval.txt',
        data_prefix=dict(sub_data_root='VOC2007/'),
        pipeline=[dict(type='LoadImageFromFile'),
                  dict(type='LoadAnnotations', with_bbox=True)]))


def test_bad_annotations_name_the_file(tmp_path):
    root = _voc_copy(tmp_path)
    xml = root / 'VOC2007' / 'Annotations' / '000001.xml'
    text = xml.read_text()
    xml.write_text(text.replace('</annotation>', ''))          # malformed
    with pytest.raises(ValueError, match='000001.xml: malformed XML'):
        _dataset(root)
    xml.write_text(text.replace('<xmax>195</xmax>', '<xmax>9999</xmax>'))
    with pytest.raises(ValueError, match='000001.xml: object 0 .* outside'):
        _dataset(root)
    xml.write_text(text.replace('<name>dog</name>', '<name>wolf</name>'))
    with pytest.warns(UserWarning, match="000001.xml: objects of classes \\['wolf'\\]"):
        dataset = _dataset(root)
    assert len(dataset[0]['gt_bboxes']) == 1  # the person only


def test_missing_or_unreadable_image_names_the_file(tmp_path):
    root = _voc_copy(tmp_path)
    image = root / 'VOC2007' / 'JPEGImages' / '000001.jpg'
    image.write_bytes(b'not a jpeg')
    with pytest.raises(Exception, match='000001.jpg'):
        _dataset(root)[0]
    image.unlink()
    with pytest.raises(Exception, match='000001.jpg'):
        _dataset(root)[0]


def test_non_finite_loss_stops_with_the_fix():
    from fsnet_mmdet.engine.hooks import FiniteLossHook

    hook = FiniteLossHook()
    runner = types.SimpleNamespace(iter=41)
    hook.after_train_iter(runner, 0, outputs={'loss': torch.tensor(3.0)})
    with pytest.raises(FloatingPointError,
                       match='iteration 42: non-finite loss.*loss_cls=nan.*lower '
                             'optim_wrapper.optimizer.lr'):
        hook.after_train_iter(runner, 0, outputs={
            'loss': torch.tensor(float('nan')),
            'loss_cls': torch.tensor(float('nan')), 'loss_bbox': torch.tensor(1.)})
