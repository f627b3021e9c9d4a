"""Checks a generated image against its caption: is there exactly one object of the asked colour and shape?

Pixels take the nearest palette colour (or none when far from all). Objects are 8-connected components of
the asked colour larger than `min_area`. The shape comes from q = area / (pi * r_max^2), r_max being the
largest centre-to-pixel distance: 1 for a disc, 2/pi = 0.64 for a square, 0.41 for an equilateral
triangle, whatever their rotation (the bounding-box fill ratio, 0.785 / 1 / 0.5, is also reported but a
square rotated by 8 degrees already fills its box like a disc, so it does not decide).
"""
import math

import numpy as np

from data import COLOURS, PALETTE, SHAPES

MAX_COLOUR_DISTANCE = 0.30
CIRCLE_MIN_Q = 0.80
SQUARE_MIN_Q = 0.52
DEFAULT_MIN_AREA_FRACTION = 0.015  # of a native 128x128 image: the smallest object covers about 5%


def to_unit_rgb(image):
    """Accepts uint8 [H,W,3], or float [3,H,W] / [H,W,3] in [-1,1]; returns float [H,W,3] in [0,1]."""
    a = np.asarray(image)
    if a.dtype == np.uint8:
        return a.astype(np.float32) / 255.0
    if a.shape[0] == 3 and a.shape[-1] != 3:
        a = a.transpose(1, 2, 0)
    return np.clip((a.astype(np.float32) + 1.0) / 2.0, 0.0, 1.0)


def colour_labels(rgb):
    """Palette index per pixel, -1 where no palette colour is within MAX_COLOUR_DISTANCE."""
    palette = np.array([PALETTE[c] for c in COLOURS], dtype=np.float32)
    d = np.linalg.norm(rgb[:, :, None, :] - palette[None, None], axis=-1)
    labels = d.argmin(-1)
    labels[d.min(-1) > MAX_COLOUR_DISTANCE] = -1
    return labels


def connected_components(mask):
    """8-connected components of a boolean mask via row runs and union-find.
    Returns a list of (ys, xs) integer arrays, one per component."""
    h, _ = mask.shape
    parent = []

    def find(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    runs = []  # (row, start, end_exclusive, run_id)
    prev = []
    for y in range(h):
        row = mask[y].astype(np.int8)
        edges = np.flatnonzero(np.diff(np.concatenate(([0], row, [0]))))
        cur = []
        for s, e in zip(edges[::2], edges[1::2]):
            rid = len(parent)
            parent.append(rid)
            for ps, pe, pid in prev:
                if ps <= e and pe >= s:  # overlap including diagonal neighbours
                    ra, rb = find(rid), find(pid)
                    if ra != rb:
                        parent[max(ra, rb)] = min(ra, rb)
            cur.append((s, e, rid))
            runs.append((y, s, e, rid))
        prev = cur
    groups = {}
    for y, s, e, rid in runs:
        groups.setdefault(find(rid), []).append((y, s, e))
    comps = []
    for segs in groups.values():
        ys = np.concatenate([np.full(e - s, y) for y, s, e in segs])
        xs = np.concatenate([np.arange(s, e) for y, s, e in segs])
        comps.append((ys, xs))
    return comps


def shape_features(ys, xs):
    area = len(ys)
    cy, cx = ys.mean() + 0.5, xs.mean() + 0.5
    r_max = float(np.sqrt(((ys + 0.5 - cy) ** 2 + (xs + 0.5 - cx) ** 2).max())) + 0.5
    q = area / (math.pi * r_max * r_max)
    fill = area / float((ys.max() - ys.min() + 1) * (xs.max() - xs.min() + 1))
    shape = 'circle' if q >= CIRCLE_MIN_Q else 'square' if q >= SQUARE_MIN_Q else 'triangle'
    return {'shape': shape, 'area': area, 'q': round(q, 3), 'fill': round(fill, 3),
            'centre': (round(cx, 1), round(cy, 1))}


def classify(image, shape, colour, background, min_area=None):
    """Judges one image against its caption parts. `min_area` in pixels defaults to 1.5% of the image."""
    rgb = to_unit_rgb(image)
    h, w, _ = rgb.shape
    if min_area is None:
        min_area = DEFAULT_MIN_AREA_FRACTION * h * w
    labels = colour_labels(rgb)
    border = np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]])
    border = border[border >= 0]
    bg_found = COLOURS[np.bincount(border, minlength=len(COLOURS)).argmax()] if len(border) else None
    objects = [shape_features(ys, xs) for ys, xs in connected_components(labels == COLOURS.index(colour))
               if len(ys) >= min_area]
    objects.sort(key=lambda o: -o['area'])
    correct = len(objects) == 1 and objects[0]['shape'] == shape
    return {'correct': correct, 'count': len(objects), 'objects': objects,
            'background': bg_found, 'background_correct': bg_found == background}


assert set(SHAPES) == {'circle', 'square', 'triangle'}
