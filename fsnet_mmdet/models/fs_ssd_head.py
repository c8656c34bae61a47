"""SSD head whose class and box predictor convs can be FSConv."""
from mmcv.cnn import build_conv_layer
from mmdet.models.dense_heads import SSDHead
from mmdet.registry import MODELS
from mmdet.utils import OptConfigType


@MODELS.register_module()
class FSSSDHead(SSDHead):
    """mmdet's ``SSDHead`` with its final predictor convs built from a config.

    ``SSDHead`` builds the per-level classification and regression predictors
    as plain ``nn.Conv2d`` (its ``conv_cfg`` reaches only the optional stacked
    convs). This head rebuilds exactly those convs with
    ``build_conv_layer(pred_conv_cfg, ...)``, same shapes; anchors, losses,
    target assignment and NMS are ``SSDHead``'s.

    Args:
        pred_conv_cfg: conv config of the predictors, e.g.
            ``dict(type='FSConv', preset='fsnet1')``; None keeps ``nn.Conv2d``.
        pred_interleave: with an FSConv ``pred_conv_cfg``, place the same
            output of neighbouring anchors next to each other in each
            predictor's summary (``interleave`` = 4 for box deltas, C + 1 for
            class scores) instead of the outputs of one anchor (docs/accuracy.md,
            "Why FS trailed").
        **kwargs: ``SSDHead``'s arguments.
    """

    def __init__(self, *args, pred_conv_cfg: OptConfigType = None,
                 pred_interleave: bool = False, **kwargs) -> None:
        self.pred_conv_cfg = pred_conv_cfg  # read by _init_layers
        self.pred_interleave = pred_interleave
        super().__init__(*args, **kwargs)

    def _init_layers(self) -> None:
        super()._init_layers()
        if self.pred_interleave and (self.pred_conv_cfg or {}).get(
                'type') != 'FSConv':
            raise ValueError(
                f"pred_interleave=True needs pred_conv_cfg of type 'FSConv', "
                f"got {self.pred_conv_cfg!r}")
        if self.pred_conv_cfg is None:
            return
        groups = [(b, self.cls_out_channels) for b in self.cls_convs]
        groups += [(b, 4) for b in self.reg_convs]  # 4 box deltas per anchor
        for branch, group in groups:
            dense = branch[-1]
            extra = dict(interleave=group) if self.pred_interleave else {}
            branch[-1] = build_conv_layer(
                dict(self.pred_conv_cfg, **extra), dense.in_channels,
                dense.out_channels, dense.kernel_size, stride=dense.stride,
                padding=dense.padding)
