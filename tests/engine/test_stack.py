"""The OpenMMLab stack works end to end on CPU, with our compatibility fixes."""

import pytest
import torch

import fsnet_mmdet  # noqa: F401  applies the fixes
from conftest import build_detector, load_config, voc_batch


def test_setuptools_pin_keeps_pkg_resources_and_mmdet_base_configs():
    import setuptools
    from mmengine.utils import digit_version

    assert digit_version(setuptools.__version__) < digit_version('81')
    import pkg_resources  # noqa: F401  mmcv's setup.py and mmengine need it
    cfg = load_config('configs/ssd300_bn_voc.py')  # inherits mmdet::...
    assert cfg.model.bbox_head.num_classes == 20


def test_mmcv_has_compiled_ops():
    from mmcv.ops import batched_nms

    boxes = torch.tensor([[0, 0, 10, 10], [1, 1, 10, 10], [20, 20, 30, 30.]])
    scores = torch.tensor([0.9, 0.8, 0.7])
    _, keep = batched_nms(boxes, scores, torch.zeros(3, dtype=torch.long),
                          dict(iou_threshold=0.5))
    assert keep.tolist() == [0, 2]


def test_stock_mmdet_ssd300_trains_and_predicts_on_real_voc():
    # mmdet's own VOC SSD300 (no pretrained download), one SGD step on two
    # real VOC images with their annotations, then inference through NMS.
    cfg = load_config('mmdet::pascal_voc/ssd300_voc0712.py',
                      **{'model.backbone.init_cfg': None})
    model = build_detector(cfg)
    assert type(model.bbox_head).__name__ == 'SSDHead'
    data = voc_batch(cfg.test_pipeline)
    assert [len(s.gt_instances) for s in data['data_samples']] == [2, 1]
    optim = torch.optim.SGD(model.parameters(), lr=1e-3)
    from mmengine.optim import OptimWrapper
    model.train()
    losses = model.train_step(data, OptimWrapper(optim))
    assert all(torch.isfinite(v).all() for v in losses.values())
    assert losses['loss_cls'] > 0 and losses['loss_bbox'] > 0
    model.eval()
    with torch.no_grad():
        results = model.test_step(data)
    for result in results:
        pred = result.pred_instances
        assert pred.bboxes.shape[1] == 4 and len(pred) <= 200
        assert (pred.labels < 20).all()
        assert (pred.scores[:-1] >= pred.scores[1:]).all()  # NMS output order


def test_ssd_head_predict_fix_is_needed_and_applied():
    from mmengine.structures import InstanceData
    from mmdet.models.dense_heads import SSDHead

    cfg = load_config('configs/ssd300_bn_voc.py').model
    head = SSDHead(num_classes=20, anchor_generator=cfg.bbox_head.anchor_generator,
                   bbox_coder=cfg.bbox_head.bbox_coder, test_cfg=cfg.test_cfg)
    assert head.loss_cls is None  # set by our fix; mmdet 3.3.0 leaves it unset
    sizes = (38, 19, 10, 5, 3, 1)
    feats = [torch.randn(1, c, s, s) for c, s in zip(head.in_channels, sizes)]
    meta = [dict(img_shape=(300, 300), scale_factor=(1., 1.))]
    cls_scores, bbox_preds = head(feats)
    result = head.predict_by_feat(cls_scores, bbox_preds, batch_img_metas=meta)
    assert isinstance(result[0], InstanceData) and len(result[0]) > 0
    del head.loss_cls  # what mmdet 3.3.0 gives without the fix
    with pytest.raises(AttributeError, match='loss_cls'):
        head.predict_by_feat(cls_scores, bbox_preds, batch_img_metas=meta)


def test_plain_state_dict_loads_weights_only(tmp_path):
    path = tmp_path / 'weights.pth'
    torch.save({'state_dict': {'w': torch.ones(2)}, 'meta': {'epoch': 1}}, path)
    loaded = fsnet_mmdet.load_checkpoint_file(str(path), allow_unsafe=False)
    assert loaded['meta'] == {'epoch': 1}


class _Evil:
    def __reduce__(self):
        return (print, ('this ran code from the file',))


def test_foreign_objects_never_unpickled(tmp_path, capsys):
    path = tmp_path / 'evil.pth'
    torch.save({'state_dict': {}, 'payload': _Evil()}, path)
    with pytest.raises(RuntimeError, match="refusing to unpickle.*builtins.print"):
        fsnet_mmdet.load_checkpoint_file(str(path), allow_unsafe=True)
    assert 'ran code' not in capsys.readouterr().out


@pytest.mark.parametrize('content', [b'', b'not a checkpoint', None])
def test_corrupt_checkpoint_names_file(tmp_path, content):
    path = tmp_path / 'bad.pth'
    if content is None:  # truncated real checkpoint
        torch.save({'state_dict': {'w': torch.ones(1000)}}, path)
        content = path.read_bytes()[:300]
    path.write_bytes(content)
    with pytest.raises(RuntimeError, match='bad.pth'):
        fsnet_mmdet.load_checkpoint_file(str(path))


def test_cpu_distributed_init_without_cuda(monkeypatch):
    from mmengine.dist import utils

    # The CPU path, on a GPU machine too (where test_cuda runs).
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    assert any(k.startswith('fsnet_patched_') and k.endswith('_init_dist_pytorch_cpu')
               for k in vars(utils._init_dist_pytorch))
    with pytest.raises(ValueError, match="use backend='gloo'"):
        utils._init_dist_pytorch('nccl')
    calls = []
    monkeypatch.setattr(torch.distributed, 'init_process_group',
                        lambda **kw: calls.append(kw))
    utils._init_dist_pytorch('gloo', timeout=None)
    assert calls == [dict(backend='gloo', timeout=None)]


def test_voc_metric_names_the_datasets_own_classes(monkeypatch):
    """VOC-layout data with its own classes: the per-class table uses them."""
    import numpy as np
    from mmdet.evaluation import VOCMetric
    from mmdet.evaluation.functional import mean_ap

    labels_seen = []
    original = mean_ap.print_map_summary

    def spy(mean_ap_value, results, dataset=None, *args, **kwargs):
        labels_seen.append(dataset)
        return original(mean_ap_value, results, dataset, *args, **kwargs)

    monkeypatch.setattr(mean_ap, 'print_map_summary', spy)
    gt = dict(bboxes=np.array([[10, 10, 50, 50], [60, 60, 90, 95.]]),
              labels=np.array([0, 1]), bboxes_ignore=np.zeros((0, 4)),
              labels_ignore=np.zeros(0))
    pred = [np.array([[11, 9, 50, 52, 0.9]]),
            np.array([[0, 0, 20, 20, 0.8], [61, 60, 90, 90, 0.6]])]

    def evaluate(meta):
        metric = VOCMetric(metric='mAP', eval_mode='11points')
        metric.dataset_meta = meta
        return metric.compute_metrics([(gt, pred)])['mAP']

    own = evaluate(dict(classes=('circle', 'square'), dataset_type='VOC2007'))
    from mmdet.datasets import VOCDataset
    voc_names = VOCDataset.METAINFO['classes']
    voc = evaluate(dict(classes=voc_names, dataset_type='VOC2007'))
    assert tuple(labels_seen[0]) == ('circle', 'square')
    assert labels_seen[1] == 'voc'            # VOC's own names: mmdet's path
    assert own == voc > 0                      # the names change no number
    assert not set(voc_names) & set(labels_seen[0])


def test_mmcv_nms_and_roi_align_run_under_cpu_bfloat16_autocast():
    """A two-stage detector's proposal NMS and RoIAlign inside
    BF16OptimWrapper's autocast: the float32 ops' results, in the input's
    dtype, with a gradient."""
    from mmcv.ops import RoIAlign, nms

    g = torch.Generator().manual_seed(0)
    xy = torch.rand(50, 2, generator=g) * 80
    boxes = torch.cat([xy, xy + 8 + torch.rand(50, 2, generator=g) * 30], 1)
    scores = torch.rand(50, generator=g)
    features = torch.randn(2, 8, 24, 24, generator=g)
    rois = torch.tensor([[0, 2., 3., 60., 50.], [1, 10., 0., 90., 40.]])
    align = RoIAlign(7, spatial_scale=0.25, sampling_ratio=2)
    _, keep = nms(boxes, scores, 0.5)
    expected = align(features.bfloat16().float(), rois)
    inputs = features.bfloat16().requires_grad_()
    with torch.autocast('cpu', dtype=torch.bfloat16):
        _, keep_bf16 = nms(boxes.bfloat16(), scores, 0.5)
        out = align(inputs, rois)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), expected, rtol=1e-2, atol=1e-2)
    out.float().sum().backward()
    assert inputs.grad is not None and inputs.grad.abs().sum() > 0
    # bfloat16 rounding of the boxes may reorder near-ties only
    assert len(set(keep.tolist()) ^ set(keep_bf16.tolist())) <= 2
