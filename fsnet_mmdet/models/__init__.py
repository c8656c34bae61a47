from .fs_ssd_head import FSSSDHead
from .fs_ssd_vgg import PAPER_TABLE4, FSSSD300

__all__ = ['FSSSD300', 'FSSSDHead', 'PAPER_TABLE4']
