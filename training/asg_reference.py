"""Independent reference of the `asg` sampler on the torch model (before ONNX export).

    /usr/bin/python3 training/asg_reference.py --width 512 --height 512 --json test/reference/asg-reference-512x512.json
    /usr/bin/python3 training/asg_reference.py ... --compare out/ts-latent.f32      (max |diff| against a TS latent)

Implements docs/method.md section 9 as read there, with pixel interaction and window jitter off:
  - polyphase patches X[:, a::n_h, b::n_w] of the edge-padded HR latent, patch i = a*n_w + b, key patch 0;
  - initial noise torch.randn([N, 4, p_h, p_w], Generator('cpu').manual_seed(seed)) relocated into the HR latent;
  - CFG eps = eps_u + s * (eps_c - eps_u) for every unit;
  - stage 1 (steps 0..S-1, S = round(T/2)): eps~^i = eps^i + w_t * M * (eps^0 - eps^i) for i >= 1, where eps^0 and M
    come from step k-1 (asynchronous) and step 0 is not guided; w_t = w_max * (1 + cos(pi (1000 - t) / 1000)) / 2;
    M from the key patch's conditional attn2 probabilities of the up blocks: mean over heads, over the content tokens
    1..len(prompt tokens), bilinear resize to the patch size, mean over layers, min-max (constant map -> M = 1);
  - stage 2: native-size windows, stride native/2, last aligned to the end, no jitter, uniform average / coverage;
  - the scheduler (diffusers DDIM, eta 0) steps the whole latent with the fused output.
The attention probabilities are recomputed from each attn2 layer's own inputs in a forward hook, so the model's
forward itself is untouched.
"""
import argparse
import json
import math
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from tokenizer import ClipTokenizer  # noqa: E402
from weights import load_models  # noqa: E402

NATIVE_LATENT = 16  # models/shapes-128: 128 px / 8
LATENT_MULTIPLE = 8  # what the TS pipeline uses for every model (pipeline.ts latentMultiple)
TRAIN_STEPS = 1000
SAMPLE_COUNT = 256


def js_round(x):
    """JavaScript's Math.round (half up), which the TS geometry and stage split use."""
    return math.floor(x + 0.5)


def geometry(h, w):
    rows = max(1, js_round(h / NATIVE_LATENT))
    cols = max(1, js_round(w / NATIVE_LATENT))
    ph = math.ceil(math.ceil(h / rows) / LATENT_MULTIPLE) * LATENT_MULTIPLE
    pw = math.ceil(math.ceil(w / cols) / LATENT_MULTIPLE) * LATENT_MULTIPLE
    return rows, cols, ph, pw


def window_bases(size, native):
    window = min(native, size)
    stride = native // 2
    if size <= window:
        return window, [0]
    count = math.ceil((size - window) / stride) + 1
    return window, [size - window if i == count - 1 else i * stride for i in range(count)]


class Ddim:
    """diffusers DDIMScheduler, eta 0, epsilon prediction, scaled_linear betas, float32 alphas_cumprod."""

    def __init__(self, config, steps):
        betas = torch.linspace(config['beta_start'] ** 0.5, config['beta_end'] ** 0.5, TRAIN_STEPS,
                               dtype=torch.float32) ** 2
        self.acp = torch.cumprod(1.0 - betas, dim=0)
        self.final = torch.tensor(1.0) if config['set_alpha_to_one'] else self.acp[0]
        assert config['timestep_spacing'] == 'leading' and config['prediction_type'] == 'epsilon'
        self.ratio = TRAIN_STEPS // steps
        self.timesteps = [i * self.ratio + config['steps_offset'] for i in reversed(range(steps))]

    def step(self, eps, t, x):
        a = self.acp[t]
        prev = t - self.ratio
        a_prev = self.acp[prev] if prev >= 0 else self.final
        x0 = (x - (1 - a) ** 0.5 * eps) / a ** 0.5
        return a_prev ** 0.5 * x0 + (1 - a_prev) ** 0.5 * eps


class AttentionRecorder:
    """Forward hooks on the up-block attn2 layers: head-averaged softmax(q k^T * scale) of each call."""

    def __init__(self, unet):
        self.maps = {}
        self.enabled = False
        self.handles = []
        for bi, block in enumerate(unet.up_blocks):
            for ai, attn in enumerate(block.attentions):
                for ti, tb in enumerate(attn.transformer_blocks):
                    name = f'/up_blocks.{bi}/attentions.{ai}/transformer_blocks.{ti}/attn2'
                    self.handles.append(tb.attn2.register_forward_hook(self._hook(name)))

    def _hook(self, name):
        def hook(module, inputs, output):
            if not self.enabled:
                return
            x, context = inputs
            b, n, c = x.shape
            heads = module.heads
            q = module.to_q(x).reshape(b, n, heads, c // heads).transpose(1, 2)
            k = module.to_k(context).reshape(b, context.shape[1], heads, c // heads).transpose(1, 2)
            probs = torch.softmax(q @ k.transpose(-1, -2) * module.scale, dim=-1)  # [b, heads, n, T]
            self.maps[name] = probs.mean(dim=1)
        return hook


def build_mask(maps, grid_sizes, tokens, ph, pw):
    """maps: name -> [HW, T] of the key patch's conditional row. Returns [ph, pw] or None (M = 1)."""
    total = torch.zeros(ph, pw, dtype=torch.float64)
    for name, probs in maps.items():
        gh, gw = grid_sizes[name]
        m = probs[:, tokens].double().mean(dim=1).reshape(1, 1, gh, gw)
        total += F.interpolate(m, size=(ph, pw), mode='bilinear', align_corners=False)[0, 0]
    total /= len(maps)
    lo, hi = total.min(), total.max()
    if not hi > lo:
        return None
    return ((total - lo) / (hi - lo)).float()


def run(args):
    torch.set_num_threads(1)
    config, _vae, text, unet = load_models(args.weights)
    with open(os.path.join(args.model, 'scheduler', 'scheduler_config.json')) as f:
        sched = Ddim(json.load(f), args.steps)
    tok = ClipTokenizer(os.path.join(args.model, 'tokenizer'))
    content = list(range(1, 1 + len(tok.tokenize(args.prompt))))

    h, w = args.height // 8, args.width // 8
    rows, cols, ph, pw = geometry(h, w)
    n = rows * cols
    hp, wp = rows * ph, cols * pw
    steps = args.steps
    s1 = js_round(steps * 0.5)
    channels = config['unet']['in_channels']

    gen = torch.Generator('cpu').manual_seed(args.seed)
    noise = torch.randn([n, channels, ph, pw], generator=gen)
    canvas = torch.zeros(channels, hp, wp)
    for i in range(n):
        a, b = divmod(i, cols)
        canvas[:, a::rows, b::cols] = noise[i]
    latent = canvas[:, :h, :w].clone()

    recorder = AttentionRecorder(unet)
    with torch.no_grad():
        ids = torch.tensor([tok(args.negative), tok(args.prompt)], dtype=torch.int32)
        hidden, _ = text(ids)
        uncond, cond = hidden[0:1], hidden[1:2]

        def cfg_eval(samples, t, record=False):
            """samples [B, C, H, W] -> CFG eps [B, C, H, W]; batch rows [uncond x B, cond x B]."""
            bsz = samples.shape[0]
            ctx = torch.cat([uncond.expand(bsz, -1, -1), cond.expand(bsz, -1, -1)])
            tt = torch.full((2 * bsz,), t, dtype=torch.int64)
            recorder.enabled = record
            out = unet(torch.cat([samples, samples]), tt, ctx)
            recorder.enabled = False
            e_u, e_c = out[:bsz], out[bsz:]
            return e_u + args.guidance * (e_c - e_u)

        stale_key, mask = None, None
        for k, t in enumerate(sched.timesteps):
            padded = F.pad(latent[None], (0, wp - w, 0, hp - h), mode='replicate')[0]
            if k < s1:
                patches = torch.stack([padded[:, a::rows, b::cols] for a in range(rows) for b in range(cols)])
                guided = args.structure_weight > 0 and s1 > 1 and n > 1
                want_mask = guided and args.mask and k + 1 <= s1 - 1
                eps = cfg_eval(patches, t, record=want_mask)
                new_mask = None
                if want_mask:
                    maps = {name: p[n] for name, p in recorder.maps.items()}  # key patch 0, conditional row
                    grids = {}
                    for name, p in maps.items():
                        scale = round(math.sqrt(ph * pw / p.shape[0]))
                        grids[name] = (ph // scale, pw // scale)
                    new_mask = build_mask(maps, grids, content, ph, pw)
                key_now = eps[0].clone()
                if guided and k >= 1 and stale_key is not None:
                    wt = args.structure_weight * (1 + math.cos(math.pi * (TRAIN_STEPS - t) / TRAIN_STEPS)) / 2
                    m = mask if (args.mask and mask is not None) else torch.ones(ph, pw)
                    eps[1:] = eps[1:] + wt * m * (stale_key - eps[1:])
                if want_mask:
                    mask = new_mask
                stale_key = key_now
                full = torch.zeros(channels, hp, wp)
                for i in range(n):
                    a, b = divmod(i, cols)
                    full[:, a::rows, b::cols] = eps[i]
                fused = full[:, :h, :w]
            else:
                wh, vbases = window_bases(hp, NATIVE_LATENT)
                ww, hbases = window_bases(wp, NATIVE_LATENT)
                places = [(top, left) for top in vbases for left in hbases]
                windows = torch.stack([padded[:, top:top + wh, left:left + ww] for top, left in places])
                eps = cfg_eval(windows, t)
                acc = torch.zeros(channels, hp, wp)
                cover = torch.zeros(hp, wp)
                for (top, left), e in zip(places, eps):
                    acc[:, top:top + wh, left:left + ww] += e
                    cover[top:top + wh, left:left + ww] += 1
                fused = (acc / cover)[:, :h, :w]
            latent = sched.step(fused, t, latent)
    return latent, {'rows': rows, 'cols': cols, 'patch': [ph, pw], 'stage1Steps': s1,
                    'timesteps': sched.timesteps, 'maskTokens': content}


def sample_indices(length, count=SAMPLE_COUNT):
    """Fixed, spread-out flat indices: a prime stride visits every channel and region."""
    return sorted({(j * 7919 + 13) % length for j in range(count)})


def summary(latent):
    x = latent.double()
    return {'sum': float(x.sum()), 'mean': float(x.mean()), 'std': float(x.std(unbiased=False)),
            'maxAbs': float(x.abs().max())}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--weights', default=os.path.join(HERE, 'runs', 'gpu-h200', 'model.npz'))
    p.add_argument('--model', default=os.path.join(ROOT, 'models', 'shapes-128'),
                   help='model folder: scheduler config and tokenizer')
    p.add_argument('--prompt', default='a red circle on a blue background')
    p.add_argument('--negative', default='')
    p.add_argument('--width', type=int, default=512)
    p.add_argument('--height', type=int, default=512)
    p.add_argument('--seed', type=int, default=7)
    p.add_argument('--steps', type=int, default=10)
    p.add_argument('--guidance', type=float, default=7.0)
    p.add_argument('--structure-weight', type=float, default=0.5)
    p.add_argument('--no-mask', dest='mask', action='store_false')
    p.add_argument('--json', help='write the compressed reference (settings, stats, sampled values) here')
    p.add_argument('--raw', help='write the whole final latent as float32 little-endian here')
    p.add_argument('--compare', help='a float32 latent (e.g. from scripts/asg-reference-latent.ts) to diff against')
    a = p.parse_args(argv)
    latent, info = run(a)
    flat = latent.reshape(-1)
    stats = summary(latent)
    print(json.dumps({**info, **stats}))
    if a.raw:
        flat.numpy().astype('<f4').tofile(a.raw)
    if a.json:
        idx = sample_indices(flat.numel())
        doc = {
            'description': 'Final latent of method asg on the torch model (training/asg_reference.py), '
                           'pixel interaction and window jitter off',
            'settings': {'prompt': a.prompt, 'negativePrompt': a.negative, 'width': a.width, 'height': a.height,
                         'seed': a.seed, 'steps': a.steps, 'guidanceScale': a.guidance, 'scheduler': 'ddim',
                         'method': 'asg',
                         'methodOptions': {'pixelInteraction': False, 'windowJitter': False,
                                           'structureWeight': a.structure_weight, 'mask': a.mask}},
            'shape': [1, latent.shape[0], latent.shape[1], latent.shape[2]],
            **info,
            'stats': stats,
            'indices': idx,
            'values': [float(flat[i]) for i in idx],
        }
        with open(a.json, 'w') as f:
            json.dump(doc, f, indent=1)
            f.write('\n')
    if a.compare:
        other = torch.from_numpy(np.fromfile(a.compare, dtype='<f4'))
        if other.numel() != flat.numel():
            raise SystemExit(f'{a.compare}: {other.numel()} values, expected {flat.numel()}')
        d = (other - flat).abs()
        print(json.dumps({'compare': a.compare, 'maxAbsDiff': float(d.max()), 'meanAbsDiff': float(d.mean()),
                          'maxAbsDiffOverMaxAbs': float(d.max() / flat.abs().max()),
                          'maxAbsDiffOverStd': float(d.max() / flat.std())}))


if __name__ == '__main__':
    main()
