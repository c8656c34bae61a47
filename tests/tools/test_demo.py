"""The demo pipeline end to end at tiny scale, so `make demo` cannot rot."""
import json
import xml.etree.ElementTree as ET

import pytest

from conftest import ROOT, run_tool
from fsnet_mmdet.tools.pipeline import map_of
from fsnet_mmdet.datasets.synthetic_voc import (CLASSES, MARKER,
                                                SyntheticVOCSpec, ensure_dataset,
                                                is_complete, render)


def test_generation_is_deterministic_and_voc_readable(tmp_path):
    spec = SyntheticVOCSpec(num_trainval=6, num_test=3, seed=7)
    a, objs_a = render(spec, 4)
    b, objs_b = render(spec, 4)
    assert (a == b).all() and objs_a == objs_b
    assert ensure_dataset(str(tmp_path / 'voc'), spec, progress=False)
    assert not ensure_dataset(str(tmp_path / 'voc'), spec, progress=False)
    from mmdet.datasets import VOCDataset
    dataset = VOCDataset(data_root=str(tmp_path / 'voc'),
                         ann_file='VOC2007/ImageSets/Main/trainval.txt',
                         data_prefix=dict(sub_data_root='VOC2007/'),
                         metainfo=dict(classes=CLASSES), pipeline=[])
    assert len(dataset) == 6
    labels = [i['bbox_label'] for d in dataset for i in d['instances']]
    assert labels and max(labels) < len(CLASSES)
    flags = [(i['ignore_flag']) for d in dataset for i in d['instances']]
    assert set(flags) <= {0, 1}


def test_half_written_or_corrupt_data_is_regenerated(tmp_path):
    spec = SyntheticVOCSpec(num_trainval=4, num_test=2)
    root = tmp_path / 'voc'
    ensure_dataset(str(root), spec, progress=False)
    xml = root / 'VOC2007' / 'Annotations' / '000001.xml'
    xml.write_text('<annotation><object>')            # corrupt annotation
    assert not is_complete(str(root), spec)
    assert ensure_dataset(str(root), spec, progress=False)
    ET.parse(xml)
    (root / MARKER).unlink()                          # interrupted generation
    assert ensure_dataset(str(root), spec, progress=False)
    assert json.loads((root / MARKER).read_text())['num_trainval'] == 4


@pytest.mark.e2e
def test_demo_runs_end_to_end_and_refuses_to_mix_results(tmp_path):
    args = ['tools/demo.py', '--work-dir', tmp_path / 'work', '--data-root',
            tmp_path / 'data', '--num-trainval', '8', '--num-test', '4',
            '--iters', '2']
    result = run_tool(*args)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    summary = json.loads((tmp_path / 'work' / 'summary.json').read_text())
    assert [r['variant'] for r in summary['rows']] == ['FSNet', 'FSNet-WQ']
    fs, wq = summary['rows']
    assert wq['effective'] < fs['params'] and wq['bytes'] < fs['bytes']
    assert fs['mAP'] == map_of(str(tmp_path / 'work' / 'test_fs'))
    assert wq['mAP'] == map_of(str(tmp_path / 'work' / 'test_wq'))
    # The float file is weights + the run's dataset_meta: mmdet's own
    # init_detector names the demo's classes (not COCO's).
    from mmdet.apis import init_detector
    model = init_detector(str(ROOT / 'configs' / 'demo' / 'fsnet_ssd300_demo.py'),
                          str(tmp_path / 'work' / 'fsnet_fp32.pth'), device='cpu')
    assert tuple(model.dataset_meta['classes']) == tuple(CLASSES)
    pictures = tmp_path / 'work' / 'pictures'
    assert {'loss.png', 'params_vs_map.png', 'detections_0.jpg'} <= {
        p.name for p in pictures.iterdir()}
    assert '| FSNet-WQ |' in result.stdout
    assert 'no benchmark results at 2 iterations' in result.stdout
    summary_md = (tmp_path / 'work' / 'summary.md').read_text()
    assert '2 training iterations (`configs/demo/' in summary_md
    assert 'wall time' in summary_md and summary['iters'] == 2
    again = run_tool(*args)
    assert again.returncode != 0
    assert 'already holds a finished demo' in again.stderr


def test_dense_rows_come_from_the_benchmark_results_labelled(tmp_path):
    from fsnet_mmdet.tools.demo import benchmark_dense_rows
    assert benchmark_dense_rows(750, str(tmp_path)) == []
    row = dict(seeds=1, params=1000, bytes=4321, mAP=0.5)
    fp32 = [dict(row, name='dense-w0.25'), dict(row, name='fs-k3x1', mAP=0.1),
            dict(row, name='dense-as-fs-k3x1', params=80, mAP=0.2)]
    bf16 = [dict(row, name='dense-as-fs-k3x1-bf16', params=90, mAP=0.25,
                 seeds=3)]
    for folder, rows in (('iters750', fp32), ('iters750-bf16', bf16)):
        (tmp_path / 'docs' / 'accuracy' / folder).mkdir(parents=True)
        (tmp_path / 'docs' / 'accuracy' / folder / 'results.json').write_text(
            json.dumps(dict(rows=rows)))
    dense = benchmark_dense_rows(750, str(tmp_path))
    assert [(r['params'], r['mAP']) for r in dense] == [(1000, 0.5), (90, 0.25)]
    assert all('not trained here' in r['variant'] for r in dense)
    assert '3 seed(s)' in dense[1]['variant'] and 'bf16' in dense[1]['variant']
    assert benchmark_dense_rows(1500, str(tmp_path)) == []
