"""A test-only hook: every rank saves its final weights (tests/configs/*dist*)."""
import os

import torch
import torch.distributed as dist
from mmengine.hooks import Hook
from mmdet.registry import HOOKS


@HOOKS.register_module()
class DumpRankWeightsHook(Hook):

    def after_run(self, runner) -> None:
        rank = dist.get_rank() if dist.is_initialized() else 0
        model = getattr(runner.model, 'module', runner.model)
        torch.save(model.state_dict(),
                   os.path.join(runner.work_dir, f'rank{rank}.pth'))
