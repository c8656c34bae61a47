"""VOC annotations checked on load: bad files are named, never learned from."""
import warnings
import xml.etree.ElementTree as ET

from mmdet.datasets import VOCDataset
from mmdet.registry import DATASETS


@DATASETS.register_module()
class CheckedVOCDataset(VOCDataset):
    """mmdet's ``VOCDataset`` that refuses malformed annotations.

    * malformed XML: ``ValueError`` naming the file;
    * a box outside its image (by more than one pixel) or empty: ``ValueError``
      naming the file, the object and the image size;
    * an object whose class is not in the metainfo: skipped, as mmdet does,
      but with a warning naming the file and the class.

    A missing or unreadable image fails in ``LoadImageFromFile`` with its path.
    """

    def parse_data_info(self, img_info: dict) -> dict:
        xml_path = img_info['xml_path']
        try:
            info = super().parse_data_info(img_info)
        except ET.ParseError as err:
            raise ValueError(f'{xml_path}: malformed XML ({err})') from None
        names = [obj.findtext('name') for obj in
                 ET.parse(xml_path).getroot().findall('object')]
        unknown = sorted({n for n in names if n not in self.metainfo['classes']})
        if unknown:
            warnings.warn(f'{xml_path}: objects of classes {unknown} are not in '
                          f'the dataset classes and are skipped')
        w, h = info['width'], info['height']
        for i, instance in enumerate(info['instances']):
            x1, y1, x2, y2 = instance['bbox']
            if not (-1 <= x1 < x2 <= w + 1 and -1 <= y1 < y2 <= h + 1):
                label = self.metainfo['classes'][instance['bbox_label']]
                raise ValueError(
                    f'{xml_path}: object {i} ({label}) has box '
                    f'{[x1, y1, x2, y2]} outside the {w}x{h} image or empty')
        return info
