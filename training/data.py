"""Procedural training data: one large shape on a plain background, rendered in torch (CPU or GPU).

Each image is 128x128 RGB in [-1, 1] with a caption "a <colour> <shape> on a <colour> background".
Shapes are drawn from signed distances with a one-pixel soft edge, so the same code renders at any size.
"""
import math

import torch

SHAPES = ('circle', 'square', 'triangle')
# Object colours come first: backgrounds may use every entry, objects only the first six.
PALETTE = {
    'red': (0.88, 0.10, 0.10),
    'green': (0.10, 0.72, 0.18),
    'blue': (0.12, 0.22, 0.90),
    'yellow': (0.96, 0.88, 0.10),
    'white': (0.95, 0.95, 0.95),
    'black': (0.06, 0.06, 0.06),
    'gray': (0.50, 0.50, 0.50),
    'orange': (0.98, 0.52, 0.05),
    'purple': (0.52, 0.14, 0.68),
}
COLOURS = tuple(PALETTE)
OBJECT_COLOURS = COLOURS[:6]
BACKGROUND_COLOURS = COLOURS
CAPTION_WORDS = ('a', 'on', 'background') + SHAPES + COLOURS

SIZE = 128
MIN_FRACTION, MAX_FRACTION = 0.35, 0.60  # object extent as a fraction of the image side
MAX_ROTATION = math.radians(10.0)
COLOUR_JITTER = 0.04
MAX_GRADIENT = 0.12


def caption(shape, colour, background):
    return f'a {colour} {shape} on a {background} background'


def sample_labels(n, generator, device='cpu'):
    """Random (shape, object colour, background colour) indices; background never equals the object colour."""
    shape = torch.randint(0, len(SHAPES), (n,), generator=generator, device=device)
    obj = torch.randint(0, len(OBJECT_COLOURS), (n,), generator=generator, device=device)
    # Draw the background from the other len(COLOURS) - 1 colours.
    bg = torch.randint(0, len(COLOURS) - 1, (n,), generator=generator, device=device)
    bg = bg + (bg >= obj).long()
    return shape, obj, bg


def labels_to_captions(shape, obj, bg):
    return [caption(SHAPES[s], COLOURS[o], COLOURS[b]) for s, o, b in zip(shape.tolist(), obj.tolist(), bg.tolist())]


def _uniform(n, lo, hi, generator, device):
    return lo + (hi - lo) * torch.rand(n, generator=generator, device=device)


def render(shape, obj, bg, generator, size=SIZE):
    """Render images [n, 3, size, size] in [-1, 1] for label tensors (all on the generator's device)."""
    device = shape.device
    n = shape.shape[0]
    palette = torch.tensor([PALETTE[c] for c in COLOURS], device=device)
    extent = _uniform(n, MIN_FRACTION, MAX_FRACTION, generator, device) * size  # side / diameter in pixels
    angle = _uniform(n, -MAX_ROTATION, MAX_ROTATION, generator, device) * (shape != 0).float()
    # Half-size of the axis-aligned box around the (rotated) shape, so it stays fully inside.
    # (cos + |sin|) bounds both the rotated square and the rotated triangle.
    half = 0.5 * extent * (torch.cos(angle) + torch.sin(angle.abs()))
    margin = half + 1.0
    cx = margin + torch.rand(n, generator=generator, device=device) * (size - 2 * margin)
    cy = margin + torch.rand(n, generator=generator, device=device) * (size - 2 * margin)

    coords = torch.arange(size, device=device, dtype=torch.float32) + 0.5
    gy, gx = torch.meshgrid(coords, coords, indexing='ij')
    px = gx[None] - cx[:, None, None]
    py = gy[None] - cy[:, None, None]
    c = torch.cos(angle)[:, None, None]
    s = torch.sin(angle)[:, None, None]
    ux = c * px + s * py  # coordinates in the shape's own rotated frame
    uy = -s * px + c * py
    r = 0.5 * extent[:, None, None]

    d_circle = torch.sqrt(px * px + py * py) - r
    d_square = torch.maximum(ux.abs(), uy.abs()) - r
    # Equilateral triangle with side `extent`, apex up, centred on its bounding box.
    h = extent[:, None, None] * (math.sqrt(3.0) / 2.0)
    base = uy - 0.5 * h
    k = math.sqrt(3.0) / 2.0
    left = -k * ux - 0.5 * uy - 0.25 * h
    right = k * ux - 0.5 * uy - 0.25 * h
    d_triangle = torch.maximum(base, torch.maximum(left, right))
    dist = torch.where((shape == 0)[:, None, None], d_circle,
                       torch.where((shape == 1)[:, None, None], d_square, d_triangle))
    cover = (0.5 - dist).clamp(0.0, 1.0)[:, None]  # [n,1,H,W] soft one-pixel edge

    jitter = (torch.rand(n, 2, 3, generator=generator, device=device) * 2 - 1) * COLOUR_JITTER
    obj_rgb = (palette[obj] + jitter[:, 0]).clamp(0, 1)[:, :, None, None]
    bg_rgb = (palette[bg] + jitter[:, 1]).clamp(0, 1)[:, :, None, None]
    grad = _uniform(n, -MAX_GRADIENT, MAX_GRADIENT, generator, device)[:, None, None, None]
    ramp = (coords / size - 0.5)[None, None, :, None]
    background = (bg_rgb * (1.0 + grad * ramp * 2.0)).clamp(0, 1)
    image = background * (1 - cover) + obj_rgb * cover
    return image * 2.0 - 1.0


def batch(n, generator, size=SIZE):
    """(images [n,3,size,size] in [-1,1], captions, (shape, obj, bg))."""
    device = generator.device
    labels = sample_labels(n, generator, device)
    return render(*labels, generator, size=size), labels_to_captions(*labels), labels
