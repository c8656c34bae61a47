from .checked_voc import CheckedVOCDataset
from .synthetic_voc import CLASSES, SyntheticVOCSpec, ensure_dataset, generate

__all__ = ['CLASSES', 'CheckedVOCDataset', 'SyntheticVOCSpec',
           'ensure_dataset', 'generate']
