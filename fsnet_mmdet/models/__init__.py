from .fs_ssd_head import FSSSDHead
from .fs_ssd_vgg import FSSSD300

__all__ = ['FSSSD300', 'FSSSDHead']
