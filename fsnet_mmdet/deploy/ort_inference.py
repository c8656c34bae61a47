"""onnxruntime inference on an exported detector, with MMDetection around it.

The ONNX file (:func:`~fsnet_mmdet.deploy.onnx_export.export_onnx`) holds the
network up to the head's raw outputs. Everything around it is MMDetection's
own code, built from the same config, so the detections are those of
``mmdet.apis.inference_detector``: the config's test pipeline (load, resize,
pack), the model's ``data_preprocessor`` (normalization, BGR -> RGB, batch),
then, on onnxruntime's outputs, the head's ``predict_by_feat`` (anchors, box
decoding, score threshold, NMS with mmcv's ``batched_nms``, rescaling to the
original image). Post-processing is not in the graph: it stays the exact
code the PyTorch model runs (docs/deploy.md).

    python -m fsnet_mmdet.deploy.ort_inference CONFIG MODEL.onnx IMAGE [IMAGE ...]
"""
from __future__ import annotations

import argparse
import json
import os
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import Tensor

from ..utils.io import atomic_path
from .onnx_export import INPUT_NAME, read_output_groups, require

#: Graph optimization levels of onnxruntime, by the names this module takes.
GRAPH_OPTIMIZATIONS = {
    'disabled': 'ORT_DISABLE_ALL',
    'basic': 'ORT_ENABLE_BASIC',
    'extended': 'ORT_ENABLE_EXTENDED',
    'all': 'ORT_ENABLE_ALL',
}


def ort_session(onnx_file: str, optimization: str = 'all',
                threads: Optional[int] = None):
    """An onnxruntime CPU session of an ONNX file.

    Args:
        onnx_file: the model.
        optimization: a key of :data:`GRAPH_OPTIMIZATIONS` (``'all'``:
            onnxruntime's default, which also folds every weight computed
            from a summary into a constant when the model loads).
        threads: intra-op threads (None: onnxruntime's default).

    Raises:
        ValueError: an unknown optimization level or thread count.
        FileNotFoundError: no such file.
        MissingDeployDependency: onnxruntime is not installed.
    """
    ort = require('onnxruntime', 'onnxruntime inference')
    if optimization not in GRAPH_OPTIMIZATIONS:
        raise ValueError(f'optimization must be one of '
                         f'{list(GRAPH_OPTIMIZATIONS)}, got {optimization!r}')
    if threads is not None and (isinstance(threads, bool)
                                or not isinstance(threads, int) or threads < 1):
        raise ValueError(f'threads must be a positive int or None, got '
                         f'{threads!r}')
    if not os.path.isfile(onnx_file):
        raise FileNotFoundError(f'{onnx_file}: no such ONNX file')
    options = ort.SessionOptions()
    options.graph_optimization_level = getattr(
        ort.GraphOptimizationLevel, GRAPH_OPTIMIZATIONS[optimization])
    if threads is not None:
        options.intra_op_num_threads = threads
    return ort.InferenceSession(onnx_file, options,
                                providers=['CPUExecutionProvider'])


def split_outputs(outputs: Sequence[np.ndarray],
                  groups: Sequence[int]) -> Tuple[List[Tensor], ...]:
    """The graph's flat outputs as ``bbox_head.forward`` returns them.

    Args:
        outputs: the session's outputs, in the graph's order.
        groups: number of levels per group (the model's metadata).

    Returns:
        A tuple of per-level tensor lists (class scores, box deltas, ...).
    """
    if len(outputs) != sum(groups):
        raise ValueError(f'the graph has {len(outputs)} outputs, its '
                         f'metadata says {sum(groups)} ({list(groups)})')
    tensors, start = [torch.from_numpy(np.asarray(o)) for o in outputs], 0
    result = []
    for count in groups:
        result.append(tensors[start:start + count])
        start += count
    return tuple(result)


def class_names(cfg) -> Optional[Tuple[str, ...]]:
    """The class names of the config's test dataset (its ``metainfo`` or its
    dataset type's), or None."""
    from mmdet.registry import DATASETS

    dataset = cfg.test_dataloader.dataset
    while 'dataset' in dataset and 'metainfo' not in dataset:
        dataset = dataset.dataset
    classes = (dataset.get('metainfo') or {}).get('classes')
    if classes:
        return tuple(classes)
    dataset_type = DATASETS.get(dataset.get('type', ''))
    meta = getattr(dataset_type, 'METAINFO', None) or {}
    return tuple(meta['classes']) if 'classes' in meta else None


class OrtDetector:
    """An exported single-stage detector run by onnxruntime.

    Calling it on images gives what ``mmdet.apis.inference_detector`` gives
    for the PyTorch model of the same config and weights: one
    ``DetDataSample`` per image with ``pred_instances`` (``bboxes`` in the
    original image's pixels, ``scores``, ``labels``).

    Args:
        config: the detector's config (file or ``Config``), the one the
            ONNX file was exported from.
        onnx_file: the file :func:`~fsnet_mmdet.deploy.export_onnx` wrote.
        optimization: onnxruntime's graph optimization level
            (:data:`GRAPH_OPTIMIZATIONS`).
        threads: onnxruntime intra-op threads (None: its default).

    Raises:
        ValueError: the file was not written by the export, or its input
            does not take 3-channel images.
    """

    def __init__(self, config, onnx_file: str, optimization: str = 'all',
                 threads: Optional[int] = None) -> None:
        import fsnet_mmdet  # noqa: F401  registers modules, compat fixes
        from mmengine.config import Config
        from mmengine.registry import init_default_scope
        from mmdet.registry import MODELS

        cfg = config if isinstance(config, Config) else Config.fromfile(config)
        init_default_scope(cfg.get('default_scope', 'mmdet'))
        self.cfg = cfg
        self.session = ort_session(onnx_file, optimization, threads)
        self.groups = read_output_groups(
            self.session.get_modelmeta().custom_metadata_map)
        shape = self.session.get_inputs()[0].shape
        if len(shape) != 4 or shape[1] != 3:
            raise ValueError(f'{onnx_file}: input of shape {shape}, expected '
                             f'(batch, 3, H, W)')
        self.input_size = tuple(shape[2:])
        head = cfg.model.bbox_head.copy()
        head.update(train_cfg=cfg.model.get('train_cfg'),
                    test_cfg=cfg.model.get('test_cfg'))
        self.head = MODELS.build(head).eval()  # post-processing only
        self.data_preprocessor = MODELS.build(cfg.model.data_preprocessor)
        self._pipelines: Dict[bool, object] = {}

    def raw(self, inputs: Union[Tensor, np.ndarray]) -> Tuple[List[Tensor], ...]:
        """The head's raw outputs for a preprocessed batch (N, 3, H, W)."""
        batch = np.ascontiguousarray(
            inputs.detach().cpu().numpy() if isinstance(inputs, Tensor)
            else inputs, dtype=np.float32)
        return split_outputs(self.session.run(None, {INPUT_NAME: batch}),
                             self.groups)

    def _pipeline(self, arrays: bool):
        """The config's test pipeline (from arrays: ``LoadImageFromNDArray``)."""
        if arrays not in self._pipelines:
            from mmcv.transforms import Compose
            from mmdet.utils import get_test_pipeline_cfg

            steps = get_test_pipeline_cfg(self.cfg.copy())
            if arrays:
                steps[0].type = 'mmdet.LoadImageFromNDArray'
            self._pipelines[arrays] = Compose(steps)
        return self._pipelines[arrays]

    def __call__(self, images: Union[str, np.ndarray, Sequence]) -> list:
        """Detect objects in image files or arrays (BGR, as ``mmcv.imread``).

        Args:
            images: a path, an array, or a list of them (one at a time
                through the network, as ``inference_detector``).

        Returns:
            A ``DetDataSample`` for one image, a list for a list.

        Raises:
            ValueError: the pipeline's image size is not the graph's.
        """
        single = not isinstance(images, (list, tuple))
        results = []
        for image in [images] if single else images:
            arrays = isinstance(image, np.ndarray)
            data = self._pipeline(arrays)(
                dict(img=image, img_id=0) if arrays else
                dict(img_path=str(image), img_id=0))
            batch = self.data_preprocessor(
                dict(inputs=[data['inputs']],
                     data_samples=[data['data_samples']]), False)
            inputs, samples = batch['inputs'], batch['data_samples']
            if tuple(inputs.shape[2:]) != self.input_size:
                raise ValueError(
                    f'the test pipeline gives {tuple(inputs.shape[2:])} '
                    f'images, the ONNX graph takes {self.input_size}; export '
                    f'with --shape for this size')
            with torch.no_grad():
                predictions = self.head.predict_by_feat(
                    *self.raw(inputs),
                    batch_img_metas=[s.metainfo for s in samples],
                    rescale=True)
            samples[0].pred_instances = predictions[0]
            results.append(samples[0])
        return results[0] if single else results


def detections_json(samples: Sequence, names: Sequence[str],
                    classes: Optional[Sequence[str]] = None) -> List[dict]:
    """Detections as plain lists, one dict per image."""
    rows = []
    for name, sample in zip(names, samples):
        pred = sample.pred_instances
        labels = pred.labels.tolist()
        rows.append(dict(
            image=str(name), bboxes=pred.bboxes.tolist(),
            scores=pred.scores.tolist(), labels=labels,
            classes=[classes[i] if classes else str(i) for i in labels]))
    return rows


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(
        description='Detect objects with an exported detector in '
        'onnxruntime (CPU): the config\'s test pipeline and the head\'s '
        'post-processing are MMDetection\'s, the network is the ONNX file.')
    parser.add_argument('config', help='the config the model was exported from')
    parser.add_argument('model', help='ONNX file from tools/export_onnx.py')
    parser.add_argument('images', nargs='+', help='image files')
    parser.add_argument('--score-thr', type=float, default=0.3,
                        help='print detections with at least this score '
                        '(default 0.3; --out keeps all)')
    parser.add_argument('--optimization', default='all',
                        choices=list(GRAPH_OPTIMIZATIONS),
                        help='onnxruntime graph optimizations (default all)')
    parser.add_argument('--threads', type=int, default=None,
                        help='onnxruntime intra-op threads')
    parser.add_argument('--out', help='write every detection to this json file')
    args = parser.parse_args(argv)
    try:
        detector = OrtDetector(args.config, args.model, args.optimization,
                               args.threads)
        samples = detector(list(args.images))
        rows = detections_json(samples, args.images, class_names(detector.cfg))
        for row in rows:
            keep = [i for i, s in enumerate(row['scores'])
                    if s >= args.score_thr]
            print(f'{row["image"]}: {len(keep)} detections with score >= '
                  f'{args.score_thr} ({len(row["scores"])} in all)')
            for i in keep:
                box = ' '.join(f'{v:.1f}' for v in row['bboxes'][i])
                print(f'  {row["classes"][i]:<14} {row["scores"][i]:.3f}  {box}')
        if args.out:
            with atomic_path(args.out) as tmp:
                with open(tmp, 'w') as f:
                    json.dump(rows, f, indent=1)
            print(f'{args.out}: {sum(len(r["scores"]) for r in rows)} '
                  f'detections')
    except (ValueError, RuntimeError, OSError) as err:
        raise SystemExit(f'error: {err}') from None


if __name__ == '__main__':
    main()
