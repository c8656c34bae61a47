"""bfloat16 mixed-precision training on any device, CPU included.

MMEngine's ``AmpOptimWrapper`` requires CUDA (or NPU / MLU): it asserts one at
construction, because float16 needs its gradient scaler. bfloat16 has
float32's exponent range and needs no scaler, and CPUs with AVX512-BF16 or AMX
run its convolutions faster than float32: a training iteration of the demo's
FS SSD300 took 0.53x the float32 time on the project's 2-core machine
(``benchmarks/bench_train_settings.py``, side by side). The
parameters, the optimizer state and every gradient step stay float32; only
what ``torch.autocast`` lists (convolutions, matrix products) computes in
bfloat16. Use it in a config::

    optim_wrapper = dict(type='BF16OptimWrapper', optimizer=dict(...))

Evaluation (``tools/test.py``) is unchanged: float32.
"""
from contextlib import contextmanager

import torch
from mmengine.optim import OptimWrapper
from mmengine.registry import OPTIM_WRAPPERS
from torch import nn


@OPTIM_WRAPPERS.register_module()
class BF16OptimWrapper(OptimWrapper):
    """``OptimWrapper`` whose forward and loss run under bfloat16 autocast.

    The autocast device is the model's (its first parameter's device type).
    Every ``OptimWrapper`` argument (``optimizer``, ``clip_grad``,
    ``accumulative_counts``) works as there.
    """

    @contextmanager
    def optim_context(self, model: nn.Module):
        param = next(model.parameters(), None)
        device = param.device.type if param is not None else 'cpu'
        with super().optim_context(model), torch.autocast(
                device_type=device, dtype=torch.bfloat16):
            yield
