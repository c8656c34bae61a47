"""A VOC-format detection dataset generated deterministically from a seed.

Scenes of coloured, textured shapes (several classes, several objects per
image, varied scales and positions, occlusion, truncation at the border) on
textured, cluttered backgrounds, written in the standard
``VOCdevkit/VOC2007`` layout that mmdet's ``VOCDataset`` reads unchanged:
``JPEGImages/*.jpg``, ``Annotations/*.xml`` (with ``difficult`` and
``truncated`` flags) and ``ImageSets/Main/{trainval,test}.txt``.

Generation writes into a temporary folder and renames it into place with a
``.complete`` marker at the end, so an interrupted run is never half-used;
:func:`ensure_dataset` regenerates when the marker is missing, its settings
differ, or an annotation does not parse.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
import xml.etree.ElementTree as ET
from dataclasses import asdict, dataclass
from typing import List, Tuple

import cv2
import numpy as np

CLASSES = ('circle', 'square', 'triangle', 'cross', 'ring', 'star')
MARKER = '.complete'


@dataclass(frozen=True)
class SyntheticVOCSpec:
    """What to generate; every field goes into the completion marker."""

    num_trainval: int = 400
    num_test: int = 100
    seed: int = 0
    min_size: int = 240          # image sides are drawn from [min_size, max_size]
    max_size: int = 400
    max_objects: int = 4
    min_scale: float = 0.15      # object size / shorter image side
    max_scale: float = 0.55
    version: int = 3             # bump when the generator changes


def _shape_mask(cls: str, size: int, rng: np.random.Generator) -> np.ndarray:
    """A (size, size) uint8 mask of one object of class ``cls``."""
    mask = np.zeros((size, size), np.uint8)
    c, r = size / 2, size / 2 * 0.95
    angle = rng.uniform(0, 2 * np.pi)

    def polygon(n, radii):
        t = angle + np.arange(n) * 2 * np.pi / n
        pts = np.stack([c + radii * np.cos(t), c + radii * np.sin(t)], 1)
        cv2.fillPoly(mask, [pts.round().astype(np.int32)], 1)

    if cls == 'circle':
        cv2.circle(mask, (int(c), int(c)), int(r), 1, -1)
    elif cls == 'square':
        polygon(4, np.full(4, r))
    elif cls == 'triangle':
        polygon(3, np.full(3, r))
    elif cls == 'star':
        polygon(10, np.tile([r, r * 0.45], 5))
    elif cls == 'ring':
        cv2.circle(mask, (int(c), int(c)), int(r), 1, -1)
        cv2.circle(mask, (int(c), int(c)), int(r * 0.55), 0, -1)
    elif cls == 'cross':
        w = max(2, int(size * 0.3))
        lo = int(c - w / 2)
        mask[lo:lo + w, int(c - r):int(c + r)] = 1
        mask[int(c - r):int(c + r), lo:lo + w] = 1
        rot = cv2.getRotationMatrix2D((c, c), np.degrees(angle), 1.0)
        mask = cv2.warpAffine(mask, rot, (size, size), flags=cv2.INTER_NEAREST)
    return mask


def _background(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """Smooth colour field plus noise texture and clutter strokes."""
    low = rng.uniform(40, 200, (4, 4, 3)).astype(np.float32)
    img = cv2.resize(low, (w, h), interpolation=cv2.INTER_CUBIC)
    img += rng.normal(0, 12, (h, w, 3)).astype(np.float32)
    for _ in range(rng.integers(2, 7)):  # clutter: muted lines and boxes
        color = tuple(float(v) for v in rng.uniform(50, 180, 3))
        p1 = tuple(int(v) for v in rng.integers(0, [w, h]))
        p2 = tuple(int(v) for v in rng.integers(0, [w, h]))
        if rng.random() < 0.5:
            cv2.line(img, p1, p2, color, int(rng.integers(1, 4)))
        else:
            cv2.rectangle(img, p1, p2, color, int(rng.integers(1, 3)))
    return img


def _texture(h: int, w: int, color: np.ndarray,
             rng: np.random.Generator) -> np.ndarray:
    """Object fill: a saturated colour with stripes or noise."""
    fill = np.empty((h, w, 3), np.float32)
    fill[:] = color
    if rng.random() < 0.3:
        period = rng.uniform(4, 12)
        yy, xx = np.mgrid[:h, :w]
        stripes = np.sin((xx * np.cos(rng.uniform(0, np.pi)) + yy) / period)
        fill *= (0.75 + 0.25 * stripes)[..., None]
    fill += rng.normal(0, 10, (h, w, 3))
    return fill


def render(spec: SyntheticVOCSpec, index: int):
    """Image ``index`` of the dataset: (BGR uint8 image, objects).

    Each object is a dict with ``name``, ``bbox`` (x1, y1, x2, y2, 1-based
    inclusive as in VOC), ``truncated`` and ``difficult``.
    """
    rng = np.random.default_rng([spec.seed, index])
    h, w = (int(v) for v in rng.integers(spec.min_size, spec.max_size + 1, 2))
    img = _background(h, w, rng)
    owner = np.full((h, w), -1, np.int32)
    placed = []
    for k in range(int(rng.integers(1, spec.max_objects + 1))):
        cls = CLASSES[int(rng.integers(len(CLASSES)))]
        size = int(rng.uniform(spec.min_scale, spec.max_scale) * min(h, w))
        mask = _shape_mask(cls, size, rng)
        x0 = int(rng.integers(-size // 4, w - size * 3 // 4))
        y0 = int(rng.integers(-size // 4, h - size * 3 // 4))
        # Paste the part inside the image.
        sx0, sy0 = max(0, -x0), max(0, -y0)
        sx1, sy1 = min(size, w - x0), min(size, h - y0)
        sub = mask[sy0:sy1, sx0:sx1].astype(bool)
        ys, xs = np.nonzero(sub)
        if len(xs) == 0:
            continue
        region = (slice(y0 + sy0, y0 + sy1), slice(x0 + sx0, x0 + sx1))
        color = rng.uniform(0, 255, 3)
        color[int(rng.integers(3))] = rng.uniform(200, 255)  # saturated
        tex = _texture(sy1 - sy0, sx1 - sx0, color, rng)
        img[region][sub] = tex[sub]
        owner[region][sub] = k
        truncated = sub.sum() < mask.sum() * 0.95
        placed.append(dict(
            name=cls, id=k, area=int(sub.sum()), truncated=int(truncated),
            bbox=(x0 + sx0 + int(xs.min()) + 1, y0 + sy0 + int(ys.min()) + 1,
                  x0 + sx0 + int(xs.max()) + 1, y0 + sy0 + int(ys.max()) + 1)))
    objects = []
    for obj in placed:
        visible = (owner == obj['id']).sum() / obj['area']
        if visible < 0.1:
            continue  # fully hidden: not annotated
        x1, y1, x2, y2 = obj['bbox']
        small = min(x2 - x1, y2 - y1) < 12
        objects.append(dict(name=obj['name'], bbox=obj['bbox'],
                            truncated=obj['truncated'],
                            difficult=int(visible < 0.4 or small)))
    img = cv2.GaussianBlur(img, (3, 3), 0.6)
    return np.clip(img, 0, 255).astype(np.uint8), objects


def _annotation(name: str, shape: Tuple[int, int, int], objects) -> str:
    root = ET.Element('annotation')
    ET.SubElement(root, 'folder').text = 'VOC2007'
    ET.SubElement(root, 'filename').text = f'{name}.jpg'
    size = ET.SubElement(root, 'size')
    for tag, value in zip(('height', 'width', 'depth'), shape):
        ET.SubElement(size, tag).text = str(value)
    for obj in objects:
        node = ET.SubElement(root, 'object')
        ET.SubElement(node, 'name').text = obj['name']
        ET.SubElement(node, 'pose').text = 'Unspecified'
        ET.SubElement(node, 'truncated').text = str(obj['truncated'])
        ET.SubElement(node, 'difficult').text = str(obj['difficult'])
        box = ET.SubElement(node, 'bndbox')
        for tag, value in zip(('xmin', 'ymin', 'xmax', 'ymax'), obj['bbox']):
            ET.SubElement(box, tag).text = str(value)
    return ET.tostring(root, encoding='unicode')


def generate(root: str, spec: SyntheticVOCSpec = SyntheticVOCSpec(),
             progress: bool = True) -> str:
    """Write the dataset to ``root/VOC2007`` atomically; returns ``root``."""
    from mmengine.utils import ProgressBar

    parent = os.path.dirname(os.path.abspath(root))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix='.synthetic-voc-', dir=parent)
    try:
        voc = os.path.join(tmp, 'VOC2007')
        for sub in ('JPEGImages', 'Annotations', os.path.join('ImageSets', 'Main')):
            os.makedirs(os.path.join(voc, sub))
        total = spec.num_trainval + spec.num_test
        bar = ProgressBar(total) if progress else None
        names: List[str] = []
        for i in range(total):
            name = f'{i:06d}'
            img, objects = render(spec, i)
            cv2.imwrite(os.path.join(voc, 'JPEGImages', f'{name}.jpg'), img,
                        [cv2.IMWRITE_JPEG_QUALITY, 92])
            with open(os.path.join(voc, 'Annotations', f'{name}.xml'), 'w') as f:
                f.write(_annotation(name, img.shape, objects))
            names.append(name)
            if bar:
                bar.update()
        main = os.path.join(voc, 'ImageSets', 'Main')
        for split, part in (('trainval', names[:spec.num_trainval]),
                            ('test', names[spec.num_trainval:])):
            with open(os.path.join(main, f'{split}.txt'), 'w') as f:
                f.write('\n'.join(part) + '\n')
        with open(os.path.join(tmp, MARKER), 'w') as f:
            json.dump(asdict(spec), f)
        if os.path.exists(root):
            shutil.rmtree(root)
        os.replace(tmp, root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if progress:
        print()
    return root


def is_complete(root: str, spec: SyntheticVOCSpec) -> bool:
    """Whether ``root`` holds a finished generation of ``spec`` that parses."""
    try:
        with open(os.path.join(root, MARKER)) as f:
            if json.load(f) != asdict(spec):
                return False
        voc = os.path.join(root, 'VOC2007')
        for split, count in (('trainval', spec.num_trainval),
                             ('test', spec.num_test)):
            with open(os.path.join(voc, 'ImageSets', 'Main', f'{split}.txt')) as f:
                names = f.read().split()
            if len(names) != count:
                return False
            for name in names:
                ET.parse(os.path.join(voc, 'Annotations', f'{name}.xml'))
                if not os.path.isfile(os.path.join(voc, 'JPEGImages', f'{name}.jpg')):
                    return False
    except (OSError, ValueError, ET.ParseError):
        return False
    return True


def ensure_dataset(root: str, spec: SyntheticVOCSpec = SyntheticVOCSpec(),
                   progress: bool = True) -> bool:
    """Generate ``root`` unless a complete, parseable copy is there.

    Returns:
        True if it (re)generated the data.
    """
    if is_complete(root, spec):
        return False
    if os.path.exists(root):
        print(f'{root}: incomplete or different synthetic data, regenerating')
    generate(root, spec, progress)
    return True
