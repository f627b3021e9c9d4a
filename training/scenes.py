"""Procedural compositional scenes for the scenes-128 model: data.py's single objects plus scenes that need a
global layout, rendered in torch (CPU or GPU) at 128x128 in [-1, 1].

Kinds of scene (probabilities in KIND_PROBS):
- single:   data.py's picture and caption, "a red circle on a blue background" (object 35-60 % of the side).
- relation: two objects of different colours side by side or one above the other, "a red circle left of a blue
            square on a gray background" (also "right of", "above", "below"). Objects are 24-34 % of the side,
            or with SIZED_PROB one large (36-42 %) and one small (18-22 %): "a large red circle left of a small
            blue square ...". The pair is separated along the relation's axis by at least 4 px and offset by at
            most 15 % of the side across it, so the relation is unambiguous.
- count:    two or three objects of one colour and shape in distinct cells of a 2x2 grid, 20-30 % of the side:
            "two blue squares on a yellow background", "three red circles ...".
Any kind can have a striped background (STRIPED_PROB): two colours in equal bands of period 16-32 px, vertical,
horizontal or diagonal, "... on a striped gray and white background". Object colours never equal a background
colour, so a palette labelling separates objects from the background.
"""
import math

import torch

import data

KINDS = ('single', 'relation', 'count')
KIND_PROBS = (0.25, 0.45, 0.30)
RELATIONS = ('left of', 'right of', 'above', 'below')
COUNT_WORDS = {2: 'two', 3: 'three'}
PLURALS = {'circle': 'circles', 'square': 'squares', 'triangle': 'triangles'}
STRIPED_PROB = 0.35
SIZED_PROB = 0.3
RELATION_EXTENT = (0.24, 0.34)
LARGE_EXTENT = (0.36, 0.42)
SMALL_EXTENT = (0.18, 0.22)
COUNT_EXTENT = (0.20, 0.30)
STRIPE_PERIOD = (16.0, 32.0)
MAX_CROSS_OFFSET = 0.15
MIN_GAP = 4.0
SLOTS = 3

CAPTION_WORDS = tuple(dict.fromkeys(
    data.CAPTION_WORDS + ('left', 'right', 'of', 'above', 'below', 'two', 'three', 'striped', 'and', 'large',
                          'small') + tuple(PLURALS.values())))


def background_phrase(bg, bg2):
    """'a blue background' or 'a striped blue and white background' (bg2 None for a plain one)."""
    return f'a {bg} background' if bg2 is None else f'a striped {bg} and {bg2} background'


def caption(scene):
    """The caption of one scene dict (see sample_scenes)."""
    back = background_phrase(scene['bg'], scene['bg2'])
    objs = scene['objects']
    if scene['kind'] == 'single':
        o = objs[0]
        return f'a {o["colour"]} {o["shape"]} on {back}'
    if scene['kind'] == 'count':
        o = objs[0]
        return f'{COUNT_WORDS[len(objs)]} {o["colour"]} {PLURALS[o["shape"]]} on {back}'
    a, b = objs[scene['first']], objs[1 - scene['first']]

    def phrase(o):
        size = f'{o["size"]} ' if o['size'] else ''
        return f'a {size}{o["colour"]} {o["shape"]}'
    return f'{phrase(a)} {scene["relation"]} {phrase(b)} on {back}'


def _u(n, lo, hi, g, device):
    return lo + (hi - lo) * torch.rand(n, generator=g, device=device)


def _half_box(extent, angle):
    # Half-size of the axis-aligned box around a shape rotated by `angle` (as in data.render).
    return 0.5 * extent * (torch.cos(angle) + torch.sin(angle.abs()))


def sample_scenes(n, g, size=data.SIZE):
    """Labels and geometry of n scenes as tensors on g's device, plus the list of per-scene dicts for captions.

    Tensors: shape/colour/cx/cy/extent/angle/active [n, SLOTS]; bg, bg2 (-1 = plain), stripe_period,
    stripe_angle, stripe_phase [n].
    """
    dev = g.device
    kind = torch.multinomial(torch.tensor(KIND_PROBS, device=dev).expand(n, -1), 1, generator=g)[:, 0]
    striped = torch.rand(n, generator=g, device=dev) < STRIPED_PROB
    bg = torch.randint(0, len(data.COLOURS), (n,), generator=g, device=dev)
    bg2 = torch.randint(0, len(data.COLOURS) - 1, (n,), generator=g, device=dev)
    bg2 = torch.where(striped, bg2 + (bg2 >= bg).long(), torch.full_like(bg2, -1))

    def free_colour():
        c = torch.randint(0, len(data.OBJECT_COLOURS), (n,), generator=g, device=dev)
        for _ in range(64):
            bad = (c == bg) | (c == bg2)
            if not bool(bad.any()):
                break
            c = torch.where(bad, torch.randint(0, len(data.OBJECT_COLOURS), (n,), generator=g, device=dev), c)
        return c

    col0 = free_colour()
    col1 = free_colour()
    for _ in range(64):  # relation pairs need two different colours
        same = col1 == col0
        if not bool(same.any()):
            break
        col1 = torch.where(same, free_colour(), col1)
    shape = torch.randint(0, len(data.SHAPES), (n, SLOTS), generator=g, device=dev)
    colour = torch.stack([col0, col1, col0], dim=1)
    is_single, is_rel, is_count = kind == 0, kind == 1, kind == 2
    # count scenes: one shape and colour for every object
    shape = torch.where(is_count[:, None], shape[:, :1].expand(-1, SLOTS), shape)
    colour = torch.where(is_count[:, None], col0[:, None].expand(-1, SLOTS), colour)
    count = 2 + (torch.rand(n, generator=g, device=dev) < 0.5).long()
    active = torch.zeros(n, SLOTS, dtype=torch.bool, device=dev)
    active[:, 0] = True
    active[:, 1] = ~is_single
    active[:, 2] = is_count & (count == 3)

    angle = _u(n * SLOTS, -data.MAX_ROTATION, data.MAX_ROTATION, g, dev).view(n, SLOTS) * (shape != 0).float()
    extent = torch.zeros(n, SLOTS, device=dev)
    cx = torch.zeros(n, SLOTS, device=dev)
    cy = torch.zeros(n, SLOTS, device=dev)

    # single: data.py's distribution
    e = _u(n, data.MIN_FRACTION, data.MAX_FRACTION, g, dev) * size
    h = _half_box(e, angle[:, 0]) + 1.0
    sx = h + torch.rand(n, generator=g, device=dev) * (size - 2 * h)
    sy = h + torch.rand(n, generator=g, device=dev) * (size - 2 * h)

    # relation: object 0 first along the axis (left or top), object 1 second
    sized = torch.rand(n, generator=g, device=dev) < SIZED_PROB
    large_first = torch.rand(n, generator=g, device=dev) < 0.5
    ea = torch.where(sized, torch.where(large_first, _u(n, *LARGE_EXTENT, g, dev), _u(n, *SMALL_EXTENT, g, dev)),
                     _u(n, *RELATION_EXTENT, g, dev)) * size
    eb = torch.where(sized, torch.where(large_first, _u(n, *SMALL_EXTENT, g, dev), _u(n, *LARGE_EXTENT, g, dev)),
                     _u(n, *RELATION_EXTENT, g, dev)) * size
    ha = _half_box(ea, angle[:, 0])
    hb = _half_box(eb, angle[:, 1])
    slack = (size - 2 * (ha + hb) - 2.0 - MIN_GAP).clamp(min=0.0)
    u = torch.sort(torch.rand(n, 2, generator=g, device=dev), dim=1).values
    along_a = 1.0 + slack * u[:, 0] + ha
    along_b = along_a + ha + MIN_GAP + slack * (u[:, 1] - u[:, 0]) + hb
    across_a = ha + 1.0 + torch.rand(n, generator=g, device=dev) * (size - 2 * ha - 2.0)
    across_b = (across_a + _u(n, -MAX_CROSS_OFFSET, MAX_CROSS_OFFSET, g, dev) * size)
    across_b = torch.minimum(torch.maximum(across_b, hb + 1.0), size - hb - 1.0)
    horizontal = torch.rand(n, generator=g, device=dev) < 0.5
    first = (torch.rand(n, generator=g, device=dev) < 0.5).long()  # which object the caption names first

    # count: distinct cells of a 2x2 grid
    ec = _u(n * SLOTS, *COUNT_EXTENT, g, dev).view(n, SLOTS) * size
    hc = _half_box(ec, angle) + 1.0
    cells = torch.argsort(torch.rand(n, 4, generator=g, device=dev), dim=1)[:, :SLOTS]
    cell = size / 2
    room = (cell - 2 * hc).clamp(min=0.0)
    ccx = (cells % 2).float() * cell + hc + torch.rand(n, SLOTS, generator=g, device=dev) * room
    ccy = (cells // 2).float() * cell + hc + torch.rand(n, SLOTS, generator=g, device=dev) * room

    extent = torch.where(is_single[:, None], torch.stack([e, e, e], 1), extent)
    cx = torch.where(is_single[:, None], torch.stack([sx, sx, sx], 1), cx)
    cy = torch.where(is_single[:, None], torch.stack([sy, sy, sy], 1), cy)
    rel_x = torch.where(horizontal[:, None], torch.stack([along_a, along_b], 1), torch.stack([across_a, across_b], 1))
    rel_y = torch.where(horizontal[:, None], torch.stack([across_a, across_b], 1), torch.stack([along_a, along_b], 1))
    pad = torch.zeros(n, 1, device=dev)
    extent = torch.where(is_rel[:, None], torch.cat([torch.stack([ea, eb], 1), pad], 1), extent)
    cx = torch.where(is_rel[:, None], torch.cat([rel_x, pad], 1), cx)
    cy = torch.where(is_rel[:, None], torch.cat([rel_y, pad], 1), cy)
    extent = torch.where(is_count[:, None], ec, extent)
    cx = torch.where(is_count[:, None], ccx, cx)
    cy = torch.where(is_count[:, None], ccy, cy)

    stripe_period = _u(n, *STRIPE_PERIOD, g, dev)
    stripe_angle = torch.randint(0, 4, (n,), generator=g, device=dev).float() * (math.pi / 4)
    stripe_phase = torch.rand(n, generator=g, device=dev) * stripe_period

    scenes = []
    k_, sh_, co_, bg_, bg2_ = kind.tolist(), shape.tolist(), colour.tolist(), bg.tolist(), bg2.tolist()
    act_, hor_, first_, sized_, lf_ = active.tolist(), horizontal.tolist(), first.tolist(), sized.tolist(), large_first.tolist()
    for i in range(n):
        objs = []
        for s in range(SLOTS):
            if not act_[i][s]:
                continue
            o = {'shape': data.SHAPES[sh_[i][s]], 'colour': data.COLOURS[co_[i][s]], 'size': None}
            if k_[i] == 1 and sized_[i]:
                o['size'] = 'large' if (s == 0) == lf_[i] else 'small'
            objs.append(o)
        scene = {'kind': KINDS[k_[i]], 'objects': objs, 'bg': data.COLOURS[bg_[i]],
                 'bg2': None if bg2_[i] < 0 else data.COLOURS[bg2_[i]]}
        if k_[i] == 1:
            # object 0 is left of / above object 1; the caption may name either first
            scene['first'] = first_[i]
            rel = ('left of', 'right of') if hor_[i] else ('above', 'below')
            scene['relation'] = rel[first_[i]]
        scenes.append(scene)
    tensors = {'shape': shape, 'colour': colour, 'cx': cx, 'cy': cy, 'extent': extent, 'angle': angle,
               'active': active, 'bg': bg, 'bg2': bg2, 'stripe_period': stripe_period,
               'stripe_angle': stripe_angle, 'stripe_phase': stripe_phase}
    return tensors, scenes


def _shape_distance(shape, cx, cy, extent, angle, gx, gy):
    """Signed distance (px) to a circle/square/triangle per image, as in data.render; inputs [n] and grids [H, W]."""
    px = gx[None] - cx[:, None, None]
    py = gy[None] - cy[:, None, None]
    c = torch.cos(angle)[:, None, None]
    s = torch.sin(angle)[:, None, None]
    ux = c * px + s * py
    uy = -s * px + c * py
    r = 0.5 * extent[:, None, None]
    d_circle = torch.sqrt(px * px + py * py) - r
    d_square = torch.maximum(ux.abs(), uy.abs()) - r
    h = extent[:, None, None] * (math.sqrt(3.0) / 2.0)
    k = math.sqrt(3.0) / 2.0
    d_triangle = torch.maximum(uy - 0.5 * h, torch.maximum(-k * ux - 0.5 * uy - 0.25 * h, k * ux - 0.5 * uy - 0.25 * h))
    return torch.where((shape == 0)[:, None, None], d_circle,
                       torch.where((shape == 1)[:, None, None], d_square, d_triangle))


def render(t, g, size=data.SIZE):
    """Images [n, 3, size, size] in [-1, 1] for the tensors of sample_scenes (geometry given at 128 px scale)."""
    dev = t['bg'].device
    n = t['bg'].shape[0]
    scale = size / data.SIZE
    palette = torch.tensor([data.PALETTE[c] for c in data.COLOURS], device=dev)
    coords = torch.arange(size, device=dev, dtype=torch.float32) + 0.5
    gy, gx = torch.meshgrid(coords, coords, indexing='ij')

    jitter = (torch.rand(n, SLOTS + 2, 3, generator=g, device=dev) * 2 - 1) * data.COLOUR_JITTER
    bg1 = (palette[t['bg']] + jitter[:, 0]).clamp(0, 1)[:, :, None, None]
    bg2 = (palette[t['bg2'].clamp(min=0)] + jitter[:, 1]).clamp(0, 1)[:, :, None, None]
    period = (t['stripe_period'] * scale)[:, None, None]
    a = t['stripe_angle'][:, None, None]
    along = gx[None] * torch.cos(a) + gy[None] * torch.sin(a) + (t['stripe_phase'] * scale)[:, None, None]
    pos = torch.remainder(along, period)
    half = period / 2
    d1 = torch.where(pos < half, torch.minimum(pos, half - pos), -torch.minimum(pos - half, period - pos))
    band = (0.5 + d1).clamp(0, 1)[:, None]
    striped = (t['bg2'] >= 0).float()[:, None, None, None]
    background = bg1 * (1 - striped * (1 - band)) + bg2 * striped * (1 - band)
    grad = _u(n, -data.MAX_GRADIENT, data.MAX_GRADIENT, g, dev)[:, None, None, None]
    ramp = (coords / size - 0.5)[None, None, :, None]
    image = (background * (1.0 + grad * ramp * 2.0)).clamp(0, 1)
    for s in range(SLOTS):
        dist = _shape_distance(t['shape'][:, s], t['cx'][:, s] * scale, t['cy'][:, s] * scale,
                               t['extent'][:, s] * scale, t['angle'][:, s], gx, gy)
        cover = (0.5 - dist).clamp(0.0, 1.0)[:, None] * t['active'][:, s].float()[:, None, None, None]
        rgb = (palette[t['colour'][:, s]] + jitter[:, 2 + s]).clamp(0, 1)[:, :, None, None]
        image = image * (1 - cover) + rgb * cover
    return image * 2.0 - 1.0


def batch(n, g, size=data.SIZE):
    """(images [n,3,size,size] in [-1,1], captions, scene dicts)."""
    t, scenes = sample_scenes(n, g)
    return render(t, g, size=size), [caption(s) for s in scenes], scenes
