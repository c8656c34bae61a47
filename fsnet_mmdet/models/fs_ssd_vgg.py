"""VGG16-BN backbone of SSD300 for training from scratch, any conv type."""
from collections import OrderedDict
from typing import Tuple

from mmcv.cnn import ConvModule
from mmdet.registry import MODELS
from mmdet.utils import ConfigType, MultiConfig, OptConfigType
from mmengine.model import BaseModule
from torch import Tensor, nn


#: The paper's Table 4 (parameters, VOC2007 test mAP %; the paper's numbers,
#: not ours): SSD300 with BatchNorm, Tiny SSD, FSNet-1 and -2 with and
#: without WQ. The demo's chart and the accuracy benchmark's plot show it.
PAPER_TABLE4 = {
    'SSD300-BN': (26.32e6, 77.31), 'Tiny SSD': (1.13e6, 61.3),
    'FSNet-1': (1.67e6, 67.60), 'FSNet-1-WQ': (0.45e6, 67.63),
    'FSNet-2': (2.59e6, 70.14), 'FSNet-2-WQ': (0.68e6, 70.00),
}

#: SSD300's six output levels (conv4_3, fc7 and the four extra layers).
SSD300_LEVEL_CHANNELS = (512, 1024, 512, 256, 256, 256)


def scaled_width(channels: int, widen_factor: float) -> int:
    """Width of a layer of ``channels`` under ``widen_factor`` (at least 8)."""
    if not widen_factor > 0:
        raise ValueError(f'widen_factor must be > 0, got {widen_factor}')
    return max(8, int(round(channels * widen_factor)))


def ssd300_widths(widen_factor: float) -> Tuple[int, ...]:
    """Channels of SSD300's six levels at ``widen_factor``.

    The neck takes ``in_channels=widths[:2], out_channels=widths`` and the
    head ``in_channels=widths``, matching :class:`FSSSD300`'s outputs.
    """
    return tuple(scaled_width(c, widen_factor) for c in SSD300_LEVEL_CHANNELS)


@MODELS.register_module()
class FSSSD300(BaseModule):
    """SSD300's VGG16 with BatchNorm after every conv (FSNet paper, Sec. 3.2).

    VGG16 conv1_1 ... conv5_3, SSD's pool5 (3x3, stride 1), dilated fc6
    (3x3, dilation 6, 1024 channels) and fc7 (1x1, 1024 channels); every conv
    is a ``ConvModule`` (conv -> norm -> ReLU) built from ``conv_cfg`` and
    ``norm_cfg``, so one config switches ``nn.Conv2d`` <-> ``FSConv`` and
    BN <-> SyncBN. No pretrained weights: the default ``init_cfg`` is
    MMDetection's SSDVGG init for training from scratch.

    Args:
        conv_cfg: conv layer config, e.g. ``dict(type='FSConv', preset='fsnet1')``;
            None for ``nn.Conv2d``.
        norm_cfg: norm layer config; None for no normalization (stock SSD).
        act_cfg: activation config.
        in_channels: image channels.
        widen_factor: multiplies every width (1.0 is SSD300); the demo's
            CPU-scale models use 0.25. The neck and head take the widths
            :func:`ssd300_widths` ``(widen_factor)``.
        init_cfg: initialization config.

    Returns (forward):
        (conv4_3, fc7) features: (N, 512, 38, 38) and (N, 1024, 19, 19) for a
        300x300 input.
    """

    stages = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512),
              (512, 512, 512))
    out_feature_names = ('conv4_3', 'fc7')

    def __init__(self,
                 conv_cfg: OptConfigType = None,
                 norm_cfg: OptConfigType = dict(type='BN'),
                 act_cfg: ConfigType = dict(type='ReLU'),
                 in_channels: int = 3,
                 widen_factor: float = 1.0,
                 init_cfg: MultiConfig = [
                     dict(type='Kaiming', layer='Conv2d'),
                     dict(type='Constant', val=1,
                          layer=['BatchNorm2d', 'SyncBatchNorm']),
                 ]) -> None:
        super().__init__(init_cfg=init_cfg)

        def conv(cin: int, cout: int, kernel_size: int, padding: int = 0,
                 dilation: int = 1) -> ConvModule:
            return ConvModule(cin, cout, kernel_size, padding=padding,
                              dilation=dilation, conv_cfg=conv_cfg,
                              norm_cfg=norm_cfg, act_cfg=act_cfg)

        def width(c: int) -> int:
            return scaled_width(c, widen_factor)

        width(1)  # validates widen_factor before anything is built

        layers = OrderedDict()
        channels = in_channels
        for i, stage in enumerate(self.stages, start=1):
            if i > 1:
                layers[f'pool{i - 1}'] = nn.MaxPool2d(2, 2, ceil_mode=True)
            for j, c in enumerate(stage, start=1):
                layers[f'conv{i}_{j}'] = conv(channels, width(c), 3, padding=1)
                channels = width(c)
        layers['pool5'] = nn.MaxPool2d(3, 1, padding=1)
        layers['fc6'] = conv(channels, width(1024), 3, padding=6, dilation=6)
        layers['fc7'] = conv(width(1024), width(1024), 1)
        self.features = nn.Sequential(layers)

    def forward(self, x: Tensor) -> Tuple[Tensor, ...]:
        """(N, 3, H, W) image batch -> (conv4_3, fc7) feature maps."""
        outs = []
        for name, layer in self.features.named_children():
            x = layer(x)
            if name in self.out_feature_names:
                outs.append(x)
        return tuple(outs)
