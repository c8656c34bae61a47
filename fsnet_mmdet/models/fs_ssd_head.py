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
        **kwargs: ``SSDHead``'s arguments.
    """

    def __init__(self, *args, pred_conv_cfg: OptConfigType = None,
                 **kwargs) -> None:
        self.pred_conv_cfg = pred_conv_cfg  # read by _init_layers
        super().__init__(*args, **kwargs)

    def _init_layers(self) -> None:
        super()._init_layers()
        if self.pred_conv_cfg is None:
            return
        for branch in (*self.cls_convs, *self.reg_convs):
            dense = branch[-1]
            branch[-1] = build_conv_layer(
                self.pred_conv_cfg, dense.in_channels, dense.out_channels,
                dense.kernel_size, stride=dense.stride, padding=dense.padding)
