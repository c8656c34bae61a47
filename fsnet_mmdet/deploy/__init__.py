"""Deployment: ONNX export that keeps the filter summaries, onnxruntime inference.

* :mod:`.weight_functions`: an FS layer's index as a small program, in torch
  and as an ONNX model-local function (pure, no model).
* :mod:`.onnx_export`: a detector's network (up to the head's raw outputs) as
  an ONNX graph in which every FS layer's weight is computed from its summary
  (fp32, or the 8-bit WQ codes), and the baked (dense) export to compare.
* :mod:`.ort_inference`: that graph run by onnxruntime, with MMDetection's own
  pipeline, data preprocessor and head post-processing around it.

``onnx`` and ``onnxruntime`` are optional: ``pip install -e '.[deploy]'``.
Nothing here imports them before it needs them, so ``import fsnet_mmdet``
works without them; a function that needs them raises
:class:`MissingDeployDependency` with that command.
"""
from .onnx_export import MissingDeployDependency, export_onnx, exportable
from .weight_functions import WeightProgram, weight_function, weight_program

__all__ = ['MissingDeployDependency', 'WeightProgram', 'export_onnx',
           'exportable', 'weight_function', 'weight_program']
