"""Samples the trained model and checks each image against its caption.

    python3 sample.py --weights OUT/model.npz --out grid.png [--n 36] [--steps 30] [--cfg 7] [--size 128]
    python3 sample.py --weights OUT/model.npz --out recon.png --recon      (VAE reconstructions)

DDIM (eta 0, 'leading' spacing, steps_offset 1) with classifier-free guidance. The grid shows each image
with its caption and the check (green bar: exactly one object of the asked colour and shape). A JSON
report with every per-sample result is written next to the PNG.
"""
import argparse
import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import numpy as np  # noqa: E402
import torch  # noqa: E402

import data  # noqa: E402
from classify import classify  # noqa: E402
from pngio import draw_text, write_png  # noqa: E402
from schedule import ddim_sample  # noqa: E402
from tokenizer import ClipTokenizer  # noqa: E402
from weights import load_models  # noqa: E402

TOKENIZER_DIR = os.path.join(HERE, 'tokenizer')


def prompt_labels(n, seed):
    """n (shape, colour, background) triples: every shape and object colour equally often, backgrounds random."""
    g = torch.Generator().manual_seed(seed)
    combos = [(s, o) for s in range(len(data.SHAPES)) for o in range(len(data.OBJECT_COLOURS))]
    order = torch.randperm(len(combos), generator=g).tolist()
    labels = []
    for i in range(n):
        s, o = combos[order[i % len(combos)]]
        b = int(torch.randint(0, len(data.COLOURS) - 1, (1,), generator=g))
        labels.append((s, o, b + (b >= o)))
    return labels


def to_uint8(images):
    """[n,3,H,W] in [-1,1] -> [n,H,W,3] uint8."""
    return ((images.float().clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).cpu().numpy()


def grid_png(path, images, lines, marks, columns=6):
    """images [n,H,W,3] uint8; lines: up to 3 text lines per cell; marks: True/False/None per cell."""
    n, h, w, _ = images.shape
    cell_w, cell_h = max(w, 136) + 8, h + 8 + 3 * 9 + 6
    rows = (n + columns - 1) // columns
    canvas = np.full((rows * cell_h, columns * cell_w, 3), 255, dtype=np.uint8)
    for i in range(n):
        y, x = (i // columns) * cell_h + 4, (i % columns) * cell_w + 4
        canvas[y:y + h, x:x + w] = images[i]
        if marks[i] is not None:
            canvas[y + h + 1:y + h + 4, x:x + w] = (20, 160, 40) if marks[i] else (210, 30, 30)
        for j, text in enumerate(lines[i][:3]):
            draw_text(canvas, x, y + h + 6 + 9 * j, text[:cell_w // 6])
    write_png(path, canvas)


@torch.no_grad()
def generate(text, unet, vae, tok, sf, labels, steps, cfg, size, seed, device, batch=16):
    captions = [data.caption(data.SHAPES[s], data.COLOURS[o], data.COLOURS[b]) for s, o, b in labels]
    latent = size // 8
    g = torch.Generator().manual_seed(seed)
    noise = torch.randn(len(labels), 4, latent, latent, generator=g)
    uncond, _ = text(torch.tensor([tok('')], device=device))
    out = []
    for i in range(0, len(labels), batch):
        ids = torch.tensor([tok(c) for c in captions[i:i + batch]], device=device)
        cond, _ = text(ids)
        ctx = torch.cat([uncond.expand(len(ids), -1, -1), cond])

        def eps_fn(x, t):
            tt = torch.full((2 * x.shape[0],), t, dtype=torch.long, device=device)
            e_u, e_c = unet(torch.cat([x, x]), tt, ctx).chunk(2)
            return e_u + cfg * (e_c - e_u)

        z = ddim_sample(eps_fn, noise[i:i + batch].to(device), steps)
        out.append(vae.decoder(z / sf).cpu())
    return torch.cat(out), captions


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--weights', required=True)
    p.add_argument('--out', required=True, help='grid PNG path; the JSON report goes next to it')
    p.add_argument('--n', type=int, default=36)
    p.add_argument('--steps', type=int, default=30)
    p.add_argument('--cfg', type=float, default=7.0)
    p.add_argument('--size', type=int, default=128, help='image side in pixels (128 = native)')
    p.add_argument('--seed', type=int, default=1234)
    p.add_argument('--device', choices=['cpu', 'cuda'], default='cpu')
    p.add_argument('--threads', type=int, default=2)
    p.add_argument('--recon', action='store_true', help='show VAE reconstructions of training images instead')
    p.add_argument('--json', default=None, help="report path (default: next to --out; '' writes none)")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    device = torch.device(a.device)
    config, vae, text, unet = load_models(a.weights, device)
    tok = ClipTokenizer(TOKENIZER_DIR)
    sf = config['scaling_factor']
    labels = prompt_labels(a.n, a.seed)
    t0 = time.time()
    if a.recon:
        g = torch.Generator().manual_seed(a.seed)
        shape, obj, bg = (torch.tensor(v) for v in zip(*labels))
        x = data.render(shape, obj, bg, g, size=a.size)
        with torch.no_grad():
            mean, _ = vae.encode(x.to(device))
            rec = vae.decoder(mean).cpu()
        images = torch.stack([x, rec], 1).reshape(-1, 3, a.size, a.size)
        labels = [l for l in labels for _ in range(2)]
        captions = [data.caption(data.SHAPES[s], data.COLOURS[o], data.COLOURS[b]) for s, o, b in labels]
        mse = torch.mean((rec - x) ** 2).item()
    else:
        images, captions = generate(text, unet, vae, tok, sf, labels, a.steps, a.cfg, a.size, a.seed, device)
        mse = None
    elapsed = time.time() - t0
    pixels = to_uint8(images)
    results = []
    # Objects keep their native pixel size at higher resolutions, so the area threshold does not scale.
    min_area = 0.015 * 128 * 128
    for img, (s, o, b), cap in zip(pixels, labels, captions):
        r = classify(img, data.SHAPES[s], data.COLOURS[o], data.COLOURS[b], min_area=min_area)
        r['caption'] = cap
        results.append(r)
    lines, marks = [], []
    for r, (s, o, b) in zip(results, labels):
        found = ' '.join(sorted({obj['shape'] for obj in r['objects']})) or 'none'
        lines.append([f'{data.COLOURS[o]} {data.SHAPES[s]}', f'on {data.COLOURS[b]}',
                      f'n={r["count"]} {found}'])
        marks.append(r['correct'])
    grid_png(a.out, pixels, lines, marks)
    correct = sum(r['correct'] for r in results)
    bg_ok = sum(r['background_correct'] for r in results)
    summary = {'weights': a.weights, 'n': len(results), 'correct': correct, 'accuracy': correct / len(results),
               'background_correct': bg_ok, 'size': a.size, 'steps': a.steps, 'cfg': a.cfg, 'seed': a.seed,
               'recon_mse': mse, 'seconds': round(elapsed, 1),
               'mean_count': float(np.mean([r['count'] for r in results]))}
    report = os.path.splitext(a.out)[0] + '.json' if a.json is None else a.json
    if report:
        with open(report, 'w') as f:
            json.dump({'summary': summary, 'samples': results}, f, indent=1)
    for r in results:
        print(f"{'ok ' if r['correct'] else 'BAD'} n={r['count']} "
              f"{[(o['shape'], o['q'], o['fill']) for o in r['objects']]} bg={r['background']} | {r['caption']}")
    print(json.dumps(summary), flush=True)


if __name__ == '__main__':
    main()
