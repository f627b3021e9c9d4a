"""Independent reference of the `asg` sampler in torch, on the weights of the shipped ONNX files.

Regenerate the committed references (Debian: apt-get install -y python3-torch python3-onnx python3-numpy;
about a minute each on one CPU thread):

    # the shipped default: x0-space guidance, w_max 1, stage split 0.8, pixel interaction and jitter on, and the
    # scheduler the pipeline picks for it (euler: patch methods above the native size do not use PNDM)
    OPENBLAS_NUM_THREADS=1 /usr/bin/python3 training/asg_reference.py --width 512 --height 512 \\
        --json test/reference/asg-default-512x512.json
    OPENBLAS_NUM_THREADS=1 /usr/bin/python3 training/asg_reference.py --width 256 --height 192 \\
        --json test/reference/asg-default-256x192.json

    # the paper reading of test/reference/asg-reference-*.json (eps-space, w_max 0.5, split 0.5, DDIM, no pixel
    # interaction or jitter); --sampled writes the old compressed format (256 sampled values + statistics)
    OPENBLAS_NUM_THREADS=1 /usr/bin/python3 training/asg_reference.py --paper-reading --width 512 --height 512 \\
        --sampled --json test/reference/asg-reference-512x512.json

    # diff against a latent of the TypeScript pipeline (scripts/asg-reference-latent.ts --from FILE --out X.f32),
    # or against the latent stored in a reference file
    ... --compare /tmp/ts.f32        ... --compare test/reference/asg-default-512x512.json

Weights: models/shapes-128/{text_encoder,unet}/model.onnx, read into the torch modules of models.py by
onnx_weights.py (--weights FILE.npz takes a training checkpoint instead). Only torch, numpy and onnx are used; no
code of the TypeScript pipeline runs here.

What is computed (docs/method.md section 9 and the behaviour documented in src/core/methods/*.ts, src/core/random/*.ts
and src/core/generation/denoise.ts, src/node/pipeline.ts; written here from those descriptions):
  - geometry: per axis n = max(1, round(h / 16)), patch = ceil(h / n) rounded up to 8; the latent is edge-padded at
    the bottom/right to n * patch; patch i = a * n_w + b is X[:, a::n_h, b::n_w]; key patch 0;
  - initial noise torch.randn([N, 4, p_h, p_w], Generator('cpu').manual_seed(seed)) * init_noise_sigma, relocated;
  - every UNet evaluation is CFG: eps = eps_u + s * (eps_c - eps_u);
  - stage 1 (steps 0..S-1, S = round(T * split)), each step:
      pixel interaction: permutation stream (below), for every element e of the [C, p_h, p_w] patch (e ascending)
        one uniform permutation perm_e of the N patches by Fisher-Yates (k = N-1 .. 1, swap(k, r_k),
        r_k in [0, k]), the r_k of consecutive k grouped while the product of the ranges k + 1 stays <= 2^32 and
        drawn as ONE randint(product) read as mixed-radix digits (r_k = R mod (k+1), R = R div (k+1));
        unit j is fed perm_e[j]'s value at e (times the scheduler's input scale), outputs go back the same way;
      guidance for patches 1..N-1 from the key output of step k-1 (asynchronous), none at step 0,
        w_t = w_max * (1 + cos(pi (1000 - t) / 1000)) / 2;
        x0 space: eps~^i = eps^i - w_t M (alpha / sigma) (X - x0^i), x0^i = (x^i - sigma eps^i) / alpha, X the key
          patch's x0 at step k-1, x^i the (unscaled, un-shuffled) patches of step k; (alpha, sigma) = (1, sigma_k)
          for euler, (sqrt(abar_t), sqrt(1 - abar_t)) for DDIM;
        eps space: eps~^i = eps^i + w_t M (eps^0_{k-1} - eps^i);
      M from step k-1: computed at steps 0..S-2 from unit 0's conditional attn2 probabilities of the up blocks
        (unit 0 is fed the shuffled patches when pixel interaction is on): mean over heads and over the content
        tokens 1..len(prompt tokens), bilinear resize (half-pixel) to the patch size, mean over layers, min-max;
  - stage 2: native-size windows on the padded latent, stride 8, last aligned to the end; with jitter
    J = floor((16 - 8) / 4) = 2, each window (row-major) draws its vertical then horizontal shift from the jitter
    stream: first window of an axis -randint(J+1), last +randint(J+1), others randint(2J+1) - J (no draw for an
    axis with one window); windows read zeros outside the padded latent; outputs averaged by coverage over the
    cropped latent;
  - derived random streams ('permutation', 'jitter'): MT19937 seeded by init_by_array with the key
    [seed mod 2^32, seed div 2^32, len(name), name bytes 4 per word little-endian] (here: Python's random.Random,
    whose integer seeding is init_by_array over the integer's 32-bit words); randint(n) for n <= 2^32 draws 32-bit
    words until one is below 2^32 - (2^32 mod n) and returns it mod n;
  - schedulers: euler (diffusers EulerDiscreteScheduler: leading timesteps + steps_offset, sigmas
    sqrt((1 - abar) / abar), init sigma sqrt(sigma_max^2 + 1), input scale 1 / sqrt(sigma^2 + 1),
    x <- x + eps (sigma_{k+1} - sigma_k)) and DDIM (eta 0). With no --scheduler the one the pipeline picks is used:
    above the native size a patch method replaces PNDM/LMS configs by euler (pipeline.ts patchScheduler).
The attention probabilities are recomputed from each attn2 layer's own inputs in a forward hook, so the model's
forward itself is untouched.
"""
import argparse
import base64
import json
import math
import os
import random
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from tokenizer import ClipTokenizer  # noqa: E402

NATIVE_LATENT = 16  # models/shapes-128: 128 px / 8
LATENT_MULTIPLE = 8  # what the TS pipeline uses for every model (pipeline.ts latentMultiple)
TRAIN_STEPS = 1000
SAMPLE_COUNT = 256
TWO_POW_32 = 1 << 32


def js_round(x):
    """JavaScript's Math.round (half up), which the TS geometry and stage split use."""
    return math.floor(x + 0.5)


def geometry(h, w):
    rows = max(1, js_round(h / NATIVE_LATENT))
    cols = max(1, js_round(w / NATIVE_LATENT))
    ph = math.ceil(math.ceil(h / rows) / LATENT_MULTIPLE) * LATENT_MULTIPLE
    pw = math.ceil(math.ceil(w / cols) / LATENT_MULTIPLE) * LATENT_MULTIPLE
    return rows, cols, ph, pw


def window_axis(size, native):
    """(window, bases, jitter) of one axis: stride native / 2, last window aligned to the end."""
    window = min(native, size)
    stride = native // 2
    if size <= window:
        return window, [0], 0
    count = math.ceil((size - window) / stride) + 1
    bases = [size - window if i == count - 1 else i * stride for i in range(count)]
    return window, bases, (native - stride) // 4


# ------------------------------------------------------------------------------------------ random streams
class DerivedStream:
    """A named stream of the run: MT19937 by init_by_array over [seed lo, seed hi, len(name), name words]."""

    def __init__(self, seed, name):
        seed %= 1 << 64
        raw = name.encode('ascii')
        key = [seed & 0xffffffff, seed >> 32, len(raw)]
        for i in range(0, len(raw), 4):
            key.append(int.from_bytes(raw[i:i + 4], 'little'))
        if key[-1] == 0:
            raise ValueError('the key must end in a nonzero word to be passed as one integer')
        # random.seed(int) runs init_by_array on the integer's 32-bit words, least significant first.
        self.rng = random.Random(sum(word << (32 * i) for i, word in enumerate(key)))

    def word(self):
        return self.rng.getrandbits(32)

    def randint(self, n):
        """Uniform in [0, n) for 1 <= n <= 2^32 by rejection (the only sizes the method draws)."""
        assert 1 <= n <= TWO_POW_32
        limit = TWO_POW_32 - TWO_POW_32 % n
        r = self.word()
        while r >= limit:
            r = self.word()
        return r % n


def fisher_yates_groups(n):
    groups, current, product = [], [], 1
    for k in range(n - 1, 0, -1):
        if product * (k + 1) > TWO_POW_32:
            groups.append(current)
            current, product = [], 1
        current.append(k)
        product *= k + 1
    if current:
        groups.append(current)
    return groups


def draw_permutations(stream, elements, n):
    """[elements, n] int64: perm[e, j] = patch fed to unit j at element e."""
    groups = fisher_yates_groups(n)
    ranges = [math.prod(k + 1 for k in g) for g in groups]
    out = np.empty((elements, n), dtype=np.int64)
    for e in range(elements):
        perm = list(range(n))
        for g, rng in zip(groups, ranges):
            r = stream.randint(rng)
            for k in g:
                r, j = divmod(r, k + 1)
                perm[k], perm[j] = perm[j], perm[k]
        out[e] = perm
    return out


def jitter_shift(stream, bases, jitter, i):
    if jitter == 0:
        return 0
    if i == 0:
        return -stream.randint(jitter + 1)
    if i == len(bases) - 1:
        return stream.randint(jitter + 1)
    return stream.randint(2 * jitter + 1) - jitter


# ------------------------------------------------------------------------------------------ schedulers
def alphas_cumprod(config):
    assert config['beta_schedule'] == 'scaled_linear' and config['prediction_type'] == 'epsilon'
    betas = torch.linspace(config['beta_start'] ** 0.5, config['beta_end'] ** 0.5, TRAIN_STEPS,
                           dtype=torch.float32) ** 2
    return torch.cumprod(1.0 - betas, dim=0)


class Ddim:
    """diffusers DDIMScheduler, eta 0, epsilon prediction, 'leading' timesteps."""
    name = 'ddim'

    def __init__(self, config, steps):
        self.acp = alphas_cumprod(config)
        self.final = torch.tensor(1.0) if config.get('set_alpha_to_one', True) else self.acp[0]
        assert config['timestep_spacing'] == 'leading'
        self.ratio = TRAIN_STEPS // steps
        self.timesteps = [i * self.ratio + config['steps_offset'] for i in reversed(range(steps))]
        self.init_sigma = 1.0

    def input_scale(self, k):
        return 1.0

    def noise_level(self, k):
        a = float(self.acp[self.timesteps[k]])
        return a ** 0.5, (1 - a) ** 0.5

    def step(self, k, eps, x):
        t = self.timesteps[k]
        a = self.acp[t]
        prev = t - self.ratio
        a_prev = self.acp[prev] if prev >= 0 else self.final
        x0 = (x - (1 - a) ** 0.5 * eps) / a ** 0.5
        return a_prev ** 0.5 * x0 + (1 - a_prev) ** 0.5 * eps


class Euler:
    """diffusers EulerDiscreteScheduler (s_churn 0, linear interpolation, no Karras sigmas), 'leading' timesteps."""
    name = 'euler'

    def __init__(self, config, steps):
        acp = alphas_cumprod(config)
        assert config['timestep_spacing'] == 'leading'
        ratio = TRAIN_STEPS // steps
        self.timesteps = [i * ratio + config['steps_offset'] for i in reversed(range(steps))]
        train = ((1 - acp) / acp) ** 0.5  # float32, ascending in t; timesteps are integers: no interpolation
        self.sigmas = torch.cat([train[self.timesteps], torch.zeros(1)]).to(torch.float32)
        self.init_sigma = float((self.sigmas.max() ** 2 + 1) ** 0.5)

    def input_scale(self, k):
        return float(1 / (self.sigmas[k] ** 2 + 1) ** 0.5)

    def noise_level(self, k):
        return 1.0, float(self.sigmas[k])

    def step(self, k, eps, x):
        return x + eps * (self.sigmas[k + 1] - self.sigmas[k])


def make_scheduler(name, model_dir, steps):
    with open(os.path.join(model_dir, 'scheduler', 'scheduler_config.json')) as f:
        config = json.load(f)
    return {'ddim': Ddim, 'euler': Euler}[name](config, steps), config['_class_name']


def pipeline_scheduler(model_dir, width, height):
    """The scheduler the TS pipeline uses for method asg when none is named (pipeline.ts patchScheduler)."""
    with open(os.path.join(model_dir, 'scheduler', 'scheduler_config.json')) as f:
        cls = json.load(f)['_class_name']
    native = NATIVE_LATENT * 8
    if (width > native or height > native) and cls in ('PNDMScheduler', 'LMSDiscreteScheduler'):
        return 'euler'
    raise SystemExit(f'the pipeline would use the model\'s {cls} here; pass --scheduler euler or ddim')


# ------------------------------------------------------------------------------------------ attention mask
class AttentionRecorder:
    """Forward hooks on the up-block attn2 layers: head-averaged softmax(q k^T * scale) of each call."""

    def __init__(self, unet):
        self.maps = {}
        self.enabled = False
        for bi, block in enumerate(unet.up_blocks):
            for ai, attn in enumerate(block.attentions):
                for ti, tb in enumerate(attn.transformer_blocks):
                    name = f'/up_blocks.{bi}/attentions.{ai}/transformer_blocks.{ti}/attn2'
                    tb.attn2.register_forward_hook(self._hook(name))

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
    """maps: name -> [HW, T] of unit 0's conditional row. Returns [ph, pw] or None (M = 1)."""
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


# ------------------------------------------------------------------------------------------ the sampler
def load_weights(args):
    if args.weights:
        from weights import load_models
        config, _vae, text, unet = load_models(args.weights)
        return config['unet']['in_channels'], text, unet, os.path.relpath(os.path.abspath(args.weights), ROOT)
    from onnx_weights import load_onnx_models
    config, text, unet = load_onnx_models(args.model)
    return config['unet']['in_channels'], text, unet, os.path.relpath(
        os.path.join(os.path.abspath(args.model), '{text_encoder,unet}', 'model.onnx'), ROOT)


def run(args):
    torch.set_num_threads(1)
    channels, text, unet, weights_source = load_weights(args)
    sched_name = args.scheduler or pipeline_scheduler(args.model, args.width, args.height)
    sched, config_class = make_scheduler(sched_name, args.model, args.steps)
    tok = ClipTokenizer(os.path.join(args.model, 'tokenizer'))
    content = list(range(1, 1 + len(tok.tokenize(args.prompt))))

    h, w = args.height // 8, args.width // 8
    rows, cols, ph, pw = geometry(h, w)
    n = rows * cols
    hp, wp = rows * ph, cols * pw
    steps = args.steps
    s1 = js_round(steps * args.stage_split)
    guided = args.structure_weight > 0 and s1 > 1 and n > 1
    wh, vbases, vjit = window_axis(hp, NATIVE_LATENT)
    ww, hbases, hjit = window_axis(wp, NATIVE_LATENT)
    elements = channels * ph * pw

    gen = torch.Generator('cpu').manual_seed(args.seed)
    noise = torch.randn([n, channels, ph, pw], generator=gen) * sched.init_sigma
    canvas = torch.zeros(channels, hp, wp)
    for i in range(n):
        a, b = divmod(i, cols)
        canvas[:, a::rows, b::cols] = noise[i]
    latent = canvas[:, :h, :w].clone()
    perm_stream = DerivedStream(args.seed, 'permutation')
    jitter_stream = DerivedStream(args.seed, 'jitter')

    recorder = AttentionRecorder(unet)
    placements_log = []
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
            scale = sched.input_scale(k)
            if k < s1:
                patches = torch.stack([padded[:, a::rows, b::cols] for a in range(rows) for b in range(cols)])
                flat = patches.reshape(n, elements)
                if args.pixel_interaction and n > 1:
                    perm = torch.from_numpy(draw_permutations(perm_stream, elements, n))  # [E, N]
                    cols_idx = torch.arange(elements)
                    units = flat[perm.T, cols_idx[None, :]]  # units[j, e] = flat[perm[e, j], e]
                else:
                    perm, units = None, flat
                want_mask = guided and args.mask and k + 1 <= s1 - 1
                out = cfg_eval((units * scale).reshape(n, channels, ph, pw), t, record=want_mask).reshape(n, elements)
                if perm is not None:
                    eps = torch.empty_like(out)
                    eps[perm.T, cols_idx[None, :]] = out  # eps[perm[e, j], e] = out[j, e]
                else:
                    eps = out
                eps = eps.reshape(n, channels, ph, pw)
                new_mask = None
                if want_mask:
                    maps = {name: p[n] for name, p in recorder.maps.items()}  # unit 0, conditional row
                    grids = {}
                    for name, p in maps.items():
                        s = round(math.sqrt(ph * pw / p.shape[0]))
                        grids[name] = (ph // s, pw // s)
                    new_mask = build_mask(maps, grids, content, ph, pw)
                if guided:
                    alpha, sigma = sched.noise_level(k)
                    if args.structure_space == 'eps':
                        key_now = eps[0].clone()
                    else:
                        key_now = (patches[0] - sigma * eps[0]) / alpha
                    wt = args.structure_weight * (1 + math.cos(math.pi * (TRAIN_STEPS - t) / TRAIN_STEPS)) / 2
                    if k >= 1 and stale_key is not None and wt > 0:
                        m = mask if (args.mask and mask is not None) else torch.ones(ph, pw)
                        if args.structure_space == 'eps':
                            eps[1:] = eps[1:] + wt * m * (stale_key - eps[1:])
                        elif sigma > 0:
                            x0 = (patches[1:] - sigma * eps[1:]) / alpha
                            eps[1:] = eps[1:] - (wt * alpha / sigma) * m * (stale_key - x0)
                    if want_mask:
                        mask = new_mask
                    stale_key = key_now
                full = torch.zeros(channels, hp, wp)
                for i in range(n):
                    a, b = divmod(i, cols)
                    full[:, a::rows, b::cols] = eps[i]
                fused = full[:, :h, :w]
            else:
                places = []
                for r, top in enumerate(vbases):
                    for c, left in enumerate(hbases):
                        dy = jitter_shift(jitter_stream, vbases, vjit, r) if args.window_jitter else 0
                        dx = jitter_shift(jitter_stream, hbases, hjit, c) if args.window_jitter else 0
                        places.append((top + dy, left + dx))
                placements_log.append(places)
                jy, jx = vjit, hjit  # zero border wide enough for any shift
                zero_padded = F.pad(padded[None], (jx, jx, jy, jy))[0]
                windows = torch.stack([zero_padded[:, top + jy:top + jy + wh, left + jx:left + jx + ww]
                                       for top, left in places])
                eps = cfg_eval(windows * scale, t)
                acc = torch.zeros(channels, hp + 2 * jy, wp + 2 * jx)
                cover = torch.zeros(hp + 2 * jy, wp + 2 * jx)
                for (top, left), e in zip(places, eps):
                    acc[:, top + jy:top + jy + wh, left + jx:left + jx + ww] += e
                    cover[top + jy:top + jy + wh, left + jx:left + jx + ww] += 1
                acc, cover = acc[:, jy:jy + h, jx:jx + w], cover[jy:jy + h, jx:jx + w]
                assert bool((cover > 0).all()), 'a latent position is not covered by any window'
                fused = acc / cover
            latent = sched.step(k, fused, latent)
    info = {'weights': weights_source, 'schedulerUsed': sched.name, 'schedulerConfigClass': config_class,
            'rows': rows, 'cols': cols, 'patch': [ph, pw], 'stage1Steps': s1,
            'timesteps': [int(t) for t in sched.timesteps], 'maskTokens': content,
            'windows': {'size': [wh, ww], 'jitter': [vjit, hjit], 'placements': placements_log}}
    return latent, info


def method_options(a):
    """Every method option as the TS pipeline resolves them (options.ts); the ones this script does not vary are
    written at the only value it implements."""
    return {'stageSplit': a.stage_split, 'pixelInteraction': a.pixel_interaction, 'structureWeight': a.structure_weight,
            'structureSchedule': 'cosine', 'structureGamma': 1, 'structureSpace': a.structure_space,
            'guidanceSync': False, 'mask': a.mask, 'maskEvery': 1, 'maskLayers': [], 'maskGamma': 1,
            'maskThreshold': 0, 'windowStride': None, 'windowJitter': a.window_jitter,
            'interactionEvery': 1, 'interactionTail': 0, 'interactionGroups': 'all', 'linesPeriod': 2, 'stage2Windows': 0}


def sample_indices(length, count=SAMPLE_COUNT):
    """Fixed, spread-out flat indices: a prime stride visits every channel and region."""
    return sorted({(j * 7919 + 13) % length for j in range(count)})


def summary(latent):
    x = latent.double()
    return {'sum': float(x.sum()), 'mean': float(x.mean()), 'std': float(x.std(unbiased=False)),
            'maxAbs': float(x.abs().max())}


def read_latent(path):
    """(values, flat indices or None for all): a raw float32 little-endian file, or a reference JSON (whole latent,
    or the sampled values of a --sampled file)."""
    if path.endswith('.json'):
        with open(path) as f:
            doc = json.load(f)
        if 'latent' not in doc:
            return torch.tensor(doc['values'], dtype=torch.float64), torch.tensor(doc['indices'])
        raw = base64.b64decode(doc['latent']['data'])
        return torch.from_numpy(np.frombuffer(raw, dtype='<f4').copy()), None
    return torch.from_numpy(np.fromfile(path, dtype='<f4')), None


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--model', default=os.path.join(ROOT, 'models', 'shapes-128'),
                   help='model folder: ONNX weights, scheduler config and tokenizer')
    p.add_argument('--weights', help='an npz training checkpoint (weights.py) instead of the ONNX weights')
    p.add_argument('--prompt', default='a red circle on a blue background')
    p.add_argument('--negative', default='')
    p.add_argument('--width', type=int, default=512)
    p.add_argument('--height', type=int, default=512)
    p.add_argument('--seed', type=int, default=7)
    p.add_argument('--steps', type=int, default=10)
    p.add_argument('--guidance', type=float, default=7.0)
    p.add_argument('--scheduler', choices=['euler', 'ddim'],
                   help='default: none named, i.e. the one the pipeline picks (recorded as scheduler null)')
    p.add_argument('--stage-split', type=float, default=0.8)
    p.add_argument('--structure-weight', type=float, default=1.0)
    p.add_argument('--structure-space', choices=['x0', 'eps'], default='x0')
    p.add_argument('--no-pixel-interaction', dest='pixel_interaction', action='store_false')
    p.add_argument('--no-jitter', dest='window_jitter', action='store_false')
    p.add_argument('--no-mask', dest='mask', action='store_false')
    p.add_argument('--paper-reading', action='store_true',
                   help='the settings of test/reference/asg-reference-*.json: ddim, split 0.5, eps space, w_max 0.5, '
                        'no pixel interaction, no jitter')
    p.add_argument('--json', help='write the reference (settings, whole latent as base64 float32 LE) here')
    p.add_argument('--sampled', action='store_true', help='with --json: the old format (256 sampled values)')
    p.add_argument('--raw', help='write the whole final latent as float32 little-endian here')
    p.add_argument('--compare', help='a float32 latent file or a reference JSON to diff against')
    a = p.parse_args(argv)
    if a.paper_reading:
        a.scheduler, a.stage_split, a.structure_space, a.structure_weight = 'ddim', 0.5, 'eps', 0.5
        a.pixel_interaction, a.window_jitter = False, False
    latent, info = run(a)
    flat = latent.reshape(-1).contiguous()
    stats = summary(latent)
    print(json.dumps({k: v for k, v in {**info, **stats}.items() if k != 'windows'}))
    settings = {'prompt': a.prompt, 'negativePrompt': a.negative, 'width': a.width, 'height': a.height,
                'seed': a.seed, 'steps': a.steps, 'guidanceScale': a.guidance, 'scheduler': a.scheduler,
                'method': 'asg', 'methodOptions': method_options(a)}
    if a.raw:
        flat.numpy().astype('<f4').tofile(a.raw)
    if a.json and a.sampled:
        idx = sample_indices(flat.numel())
        doc = {
            'description': 'Final latent of method asg on the torch model (training/asg_reference.py), '
                           + ('pixel interaction and window jitter off' if not (a.pixel_interaction or a.window_jitter)
                              else 'sampled values'),
            'settings': {**settings, 'methodOptions': {
                'pixelInteraction': a.pixel_interaction, 'windowJitter': a.window_jitter,
                'structureWeight': a.structure_weight, 'mask': a.mask, 'stageSplit': a.stage_split,
                'structureSpace': a.structure_space, 'structureSchedule': 'cosine', 'structureGamma': 1}},
            'shape': [1, latent.shape[0], latent.shape[1], latent.shape[2]],
            **{k: v for k, v in info.items() if k in ('rows', 'cols', 'patch', 'stage1Steps', 'timesteps',
                                                       'maskTokens')},
            'stats': stats,
            'indices': idx,
            'values': [float(flat[i]) for i in idx],
        }
    elif a.json:
        doc = {
            'description': 'Final latent of method asg computed in torch by training/asg_reference.py from the '
                           'weights of the shipped ONNX files; every setting the test passes to the pipeline is '
                           'under "settings" (scheduler null: none named, the pipeline picks "schedulerUsed")',
            'command': 'OPENBLAS_NUM_THREADS=1 /usr/bin/python3 training/asg_reference.py ' + ' '.join(sys.argv[1:]),
            'settings': settings,
            'shape': [1, latent.shape[0], latent.shape[1], latent.shape[2]],
            **info,
            'stats': stats,
            'latent': {'encoding': 'base64 float32 little-endian, row-major [1, C, h, w]',
                       'data': base64.b64encode(flat.numpy().astype('<f4').tobytes()).decode('ascii')},
        }
    if a.json:
        with open(a.json, 'w') as f:
            json.dump(doc, f, indent=1)
            f.write('\n')
    if a.compare:
        other, idx = read_latent(a.compare)
        mine = flat.double() if idx is None else flat.double()[idx]
        if other.numel() != mine.numel():
            raise SystemExit(f'{a.compare}: {other.numel()} values, expected {mine.numel()}')
        d = (other.double() - mine).abs()
        print(json.dumps({'compare': a.compare, 'values': d.numel(), 'maxAbsDiff': float(d.max()),
                          'meanAbsDiff': float(d.mean()),
                          'maxAbsDiffOverMaxAbs': float(d.max() / flat.abs().max()),
                          'maxAbsDiffOverStd': float(d.max() / flat.std())}))


if __name__ == '__main__':
    main()
