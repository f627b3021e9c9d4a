"""Trains the shapes-128 latent diffusion model: VAE first, then text encoder + UNet (epsilon prediction).

    python3 train.py --device cuda --minutes 7 --out OUT      (GPU: bf16 autocast, batch 256)
    python3 train.py --device cpu --minutes 25 --out OUT      (CPU: batch 32)
    python3 train.py --data scenes --init ../models/shapes-128 --tokenizer-dir OUT/tokenizer --minutes 60 --out OUT
        (scenes.py's compositional scenes, fine-tuned from a shipped model folder: its VAE, text encoder and UNet
        weights are the start, token embeddings are carried over by token string, new tokens start random)

Writes to OUT: model.npz (float32 weights of vae/text/unet, the UNet and text encoder as EMA, plus a
'__config__' JSON string), loss.csv and hparams.json. The npz is rewritten atomically every few
minutes and at the end, also when the run is interrupted. Runs on torch 1.13 and 2.x, numpy 1 and 2.
"""
import argparse
import json
import math
import os
import platform
import signal
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import data  # noqa: E402
import scenes  # noqa: E402
from models import DEFAULT_CONFIG, build_models, count_parameters  # noqa: E402
from schedule import NUM_TRAIN_TIMESTEPS, alphas_cumprod  # noqa: E402
from tokenizer import ClipTokenizer, build_files  # noqa: E402
from weights import save_weights  # noqa: E402

TOKENIZER_DIR = os.path.join(HERE, 'tokenizer')


def log(msg):
    print(f'[{time.strftime("%H:%M:%S")}] {msg}', flush=True)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--device', choices=['cpu', 'cuda'], default='cpu')
    p.add_argument('--minutes', type=float, required=True, help='wall-clock budget for the VAE + UNet phases')
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--out', required=True)
    p.add_argument('--vae-fraction', type=float, default=0.2, help='share of --minutes spent on the VAE')
    p.add_argument('--batch', type=int, default=None, help='default 256 on cuda, 32 on cpu')
    p.add_argument('--vae-batch', type=int, default=None, help='default 128 on cuda, 16 on cpu')
    p.add_argument('--lr', type=float, default=None, help='UNet/text learning rate (default 4e-4 cuda, 3e-4 cpu)')
    p.add_argument('--vae-lr', type=float, default=1e-3)
    p.add_argument('--kl-weight', type=float, default=1e-5, help='per-element KL weight against per-pixel MSE')
    p.add_argument('--ema', type=float, default=None, help='EMA decay cap (default 0.999 cuda, 0.995 cpu)')
    p.add_argument('--caption-dropout', type=float, default=0.1)
    p.add_argument('--threads', type=int, default=2, help='CPU threads for torch')
    p.add_argument('--log-every', type=int, default=None, help='steps per loss.csv line (default 50 cuda, 10 cpu)')
    p.add_argument('--save-every', type=float, default=None, help='seconds between checkpoints (default 60 cuda, 180 cpu)')
    p.add_argument('--data', choices=['shapes', 'scenes'], default='shapes',
                   help="shapes: data.py's single objects; scenes: scenes.py's compositional scenes")
    p.add_argument('--tokenizer-dir', default=None, help='tokenizer folder (built from the data\'s caption words '
                   'when absent; default training/tokenizer for shapes, OUT/tokenizer for scenes)')
    p.add_argument('--init', default=None, help='model folder (ONNX, e.g. ../models/shapes-128) to start from; '
                   'keeps its VAE scaling factor')
    a = p.parse_args(argv)
    gpu = a.device == 'cuda'
    for name, g, c in [('batch', 256, 32), ('vae_batch', 128, 16), ('lr', 4e-4, 3e-4), ('ema', 0.999, 0.995),
                       ('log_every', 50, 10), ('save_every', 60.0, 180.0)]:
        if getattr(a, name) is None:
            setattr(a, name, g if gpu else c)
    return a


class Stop(Exception):
    pass


def _on_signal(signum, frame):
    raise Stop(f'signal {signum}')


class Trainer:
    def __init__(self, args):
        self.args = args
        self.device = torch.device(args.device)
        self.gpu = args.device == 'cuda'
        os.makedirs(args.out, exist_ok=True)
        self.scenes = args.data == 'scenes'
        tok_dir = args.tokenizer_dir or (os.path.join(args.out, 'tokenizer') if self.scenes else TOKENIZER_DIR)
        if not os.path.exists(os.path.join(tok_dir, 'vocab.json')):
            build_files(tok_dir, scenes.CAPTION_WORDS if self.scenes else data.CAPTION_WORDS)
        self.tok = ClipTokenizer(tok_dir)
        self.caption_ids = {}
        self.config = json.loads(json.dumps(DEFAULT_CONFIG))
        self.config['text']['vocab_size'] = self.tok.vocab_size
        self.config['text']['eos_id'] = self.tok.eos
        self.config['text']['bos_id'] = self.tok.bos
        self.config['scaling_factor'] = None
        torch.manual_seed(args.seed)
        self.vae, self.text, self.unet = build_models(self.config, self.tok.vocab_size, self.tok.eos)
        if args.init:
            self.load_init(args.init)
        for m in (self.vae, self.text, self.unet):
            m.to(self.device)
        self.ema_text = {k: v.detach().clone().float() for k, v in self.text.named_parameters()}
        self.ema_unet = {k: v.detach().clone().float() for k, v in self.unet.named_parameters()}
        assert set(self.ema_text) == set(self.text.state_dict()) and set(self.ema_unet) == set(self.unet.state_dict())
        self.ema_list = list(self.ema_text.values()) + list(self.ema_unet.values())
        self.param_list = [p for _, p in self.text.named_parameters()] + [p for _, p in self.unet.named_parameters()]
        self.gen = torch.Generator(device=self.device).manual_seed(args.seed + 1)
        # Token ids of every caption (indexed by shape, object colour, background) and of the empty prompt.
        table = torch.zeros(len(data.SHAPES), len(data.COLOURS), len(data.COLOURS), 77, dtype=torch.long)
        for s, sh in enumerate(data.SHAPES):
            for o, oc in enumerate(data.COLOURS):
                for b, bc in enumerate(data.COLOURS):
                    table[s, o, b] = torch.tensor(self.tok(data.caption(sh, oc, bc)))
        self.id_table = table.to(self.device)
        self.empty_ids = torch.tensor(self.tok(''), device=self.device)
        self.acp = alphas_cumprod(self.device)
        self.log_file = open(os.path.join(args.out, 'loss.csv'), 'w')
        self.log_file.write('phase,step,elapsed_s,loss,lr,samples_per_s\n')
        self.stats = {'vae_steps': 0, 'unet_steps': 0, 'vae_loss': None, 'unet_loss': None}
        self.t0 = None
        self.last_save = time.time()

    def load_init(self, folder):
        """Weights of an exported model folder; token embeddings matched by token string (new ones stay random)."""
        from onnx_weights import onnx_state_dict
        for module, comp in ((self.vae.encoder, 'vae_encoder'), (self.vae.decoder, 'vae_decoder'),
                             (self.unet, 'unet')):
            module.load_state_dict(onnx_state_dict(os.path.join(folder, comp, 'model.onnx')), strict=True)
        state = onnx_state_dict(os.path.join(folder, 'text_encoder', 'model.onnx'))
        with open(os.path.join(folder, 'tokenizer', 'vocab.json'), encoding='utf-8') as f:
            old_vocab = json.load(f)
        old_emb = state.pop('token_embedding.weight')
        new_emb = self.text.token_embedding.weight.detach().clone()
        carried = 0
        for token, i in self.tok.encoder.items():
            if token in old_vocab:
                new_emb[i] = old_emb[old_vocab[token]]
                carried += 1
        state['token_embedding.weight'] = new_emb
        self.text.load_state_dict(state, strict=True)
        with open(os.path.join(folder, 'vae_decoder', 'config.json')) as f:
            self.init_scaling_factor = json.load(f)['scaling_factor']
        log(f'init from {folder}: {carried}/{self.tok.vocab_size} token embeddings carried over, '
            f'scaling factor {self.init_scaling_factor:.5f}')

    def ids_for(self, captions):
        out = []
        for c in captions:
            if c not in self.caption_ids:
                self.caption_ids[c] = torch.tensor(self.tok(c))
            out.append(self.caption_ids[c])
        return torch.stack(out).to(self.device)

    def training_batch(self, n):
        """(images in [-1, 1], token ids) of the chosen data."""
        if self.scenes:
            x, captions, _ = scenes.batch(n, self.gen)
            return x, self.ids_for(captions)
        shape, obj, bg = data.sample_labels(n, self.gen, self.device)
        return data.render(shape, obj, bg, self.gen), self.id_table[shape, obj, bg]

    def autocast(self):
        if self.gpu:
            return torch.autocast(device_type='cuda', dtype=torch.bfloat16)
        return torch.autocast(device_type='cpu', enabled=False)

    def elapsed(self):
        return time.time() - self.t0

    def log_line(self, phase, step, loss, lr, rate):
        self.log_file.write(f'{phase},{step},{self.elapsed():.1f},{loss:.6f},{lr:.3e},{rate:.1f}\n')
        self.log_file.flush()

    # ------------------------------------------------------------------------------------ phase 1
    def train_vae(self, deadline):
        a = self.args
        # Starting from a model (--init), only the decoder learns: the latent space the UNet knows stays the same.
        vae_params = list(self.vae.decoder.parameters()) if a.init else list(self.vae.parameters())
        opt = torch.optim.AdamW(vae_params, lr=a.vae_lr, weight_decay=0.0)
        start, step, acc, n_acc, t_last = self.elapsed(), 0, 0.0, 0, time.time()
        span = max(deadline - start, 1e-6)
        self.vae.train()
        while self.elapsed() < deadline:
            frac = (self.elapsed() - start) / span
            lr = a.vae_lr * min(1.0, (step + 1) / (100 if self.gpu else 20)) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac)))
            for g in opt.param_groups:
                g['lr'] = lr
            x, _ = self.training_batch(a.vae_batch)
            with self.autocast(), torch.set_grad_enabled(not a.init):
                mean, logvar = self.vae.encode(x)
            with self.autocast():
                z = mean + torch.exp(0.5 * logvar) * torch.randn_like(mean)
                rec = self.vae.decoder(z)
            rec_loss = F.mse_loss(rec.float(), x)
            kl = 0.5 * (mean.float() ** 2 + logvar.float().exp() - 1.0 - logvar.float()).mean()
            loss = rec_loss + a.kl_weight * kl
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(vae_params, 1.0)
            opt.step()
            step += 1
            acc = acc + rec_loss.detach()
            n_acc += 1
            if step % a.log_every == 0:
                acc = acc.item()
                rate = n_acc * a.vae_batch / (time.time() - t_last)
                self.log_line('vae', step, acc / n_acc, lr, rate)
                log(f'vae step {step} mse {acc / n_acc:.5f} kl {kl.item():.3f} lr {lr:.2e} {rate:.0f} img/s')
                self.stats['vae_loss'] = acc / n_acc
                acc, n_acc, t_last = 0.0, 0, time.time()
            self.stats['vae_steps'] = step
        self.vae.eval()

    @torch.no_grad()
    def measure_scaling_factor(self, n=2048):
        chunks = []
        for _ in range(max(1, n // self.args.vae_batch)):
            x, _ = self.training_batch(self.args.vae_batch)
            with self.autocast():
                mean, _ = self.vae.encode(x)
            chunks.append(mean.float())
        std = torch.cat(chunks).std().item()
        return 1.0 / std

    # ------------------------------------------------------------------------------------ phase 2
    def update_ema(self, step):
        """EMA of text encoder + UNet parameters (both have no persistent buffers), with warm-up."""
        decay = min(self.args.ema, (1 + step) / (10 + step))
        with torch.no_grad():
            if hasattr(torch, '_foreach_mul_'):
                torch._foreach_mul_(self.ema_list, decay)
                torch._foreach_add_(self.ema_list, self.param_list, alpha=1 - decay)
            else:
                for e, p in zip(self.ema_list, self.param_list):
                    e.mul_(decay).add_(p.detach(), alpha=1 - decay)

    def train_unet(self, deadline):
        a = self.args
        sf = self.config['scaling_factor']
        params = list(self.unet.parameters()) + list(self.text.parameters())
        opt = torch.optim.AdamW(params, lr=a.lr, weight_decay=0.0)
        start, step, acc, n_acc, t_last = self.elapsed(), 0, 0.0, 0, time.time()
        span = max(deadline - start, 1e-6)
        warmup = 200 if self.gpu else 50
        self.unet.train()
        self.text.train()
        while self.elapsed() < deadline:
            frac = (self.elapsed() - start) / span
            lr = a.lr * min(1.0, (step + 1) / warmup) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac)))
            for g in opt.param_groups:
                g['lr'] = lr
            b = a.batch
            with torch.no_grad():
                x, ids = self.training_batch(b)
                with self.autocast():
                    mean, logvar = self.vae.encode(x)
                z0 = (mean.float() + torch.exp(0.5 * logvar.float()) * torch.randn(
                    mean.shape, generator=self.gen, device=self.device)) * sf
                drop = torch.rand(b, generator=self.gen, device=self.device) < a.caption_dropout
                ids = torch.where(drop[:, None], self.empty_ids[None], ids)
                t = torch.randint(0, NUM_TRAIN_TIMESTEPS, (b,), generator=self.gen, device=self.device)
                noise = torch.randn(z0.shape, generator=self.gen, device=self.device)
                acp = self.acp[t][:, None, None, None]
                zt = acp.sqrt() * z0 + (1 - acp).sqrt() * noise
            with self.autocast():
                ctx, _ = self.text(ids)
                pred = self.unet(zt, t, ctx)
            loss = F.mse_loss(pred.float(), noise)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            self.update_ema(step)
            step += 1
            acc = acc + loss.detach()
            n_acc += 1
            self.stats['unet_steps'] = step
            if step % a.log_every == 0:
                acc = acc.item()
                rate = n_acc * b / (time.time() - t_last)
                self.log_line('unet', step, acc / n_acc, lr, rate)
                log(f'unet step {step} loss {acc / n_acc:.5f} lr {lr:.2e} {rate:.0f} samples/s '
                    f'({self.elapsed():.0f}/{a.minutes * 60:.0f} s)')
                self.stats['unet_loss'] = acc / n_acc
                acc, n_acc, t_last = 0.0, 0, time.time()
            if time.time() - self.last_save > a.save_every:
                self.save()

    # ------------------------------------------------------------------------------------- output
    def save(self, final=False):
        arrays = {}
        for prefix, state in (('vae', self.vae.state_dict()), ('text', self.ema_text), ('unet', self.ema_unet)):
            for k, v in state.items():
                arrays[f'{prefix}.{k}'] = v.detach().float().cpu().numpy()
        save_weights(os.path.join(self.args.out, 'model.npz'), arrays, self.config)
        a = self.args
        hp = {
            'config': self.config,
            'args': vars(a),
            'parameters': {'vae_encoder': count_parameters(self.vae.encoder),
                           'vae_decoder': count_parameters(self.vae.decoder),
                           'text_encoder': count_parameters(self.text), 'unet': count_parameters(self.unet)},
            'stats': dict(self.stats, elapsed_s=round(self.elapsed(), 1) if self.t0 else 0, final=final),
            'schedule': {'beta_schedule': 'scaled_linear', 'beta_start': 0.00085, 'beta_end': 0.012,
                         'num_train_timesteps': NUM_TRAIN_TIMESTEPS, 'prediction_type': 'epsilon'},
            'data': {'kind': a.data, 'size': data.SIZE, 'shapes': list(data.SHAPES), 'object_colours': list(data.OBJECT_COLOURS),
                     'background_colours': list(data.BACKGROUND_COLOURS),
                     'object_fraction': [data.MIN_FRACTION, data.MAX_FRACTION],
                     **({'scenes': {'kinds': dict(zip(scenes.KINDS, scenes.KIND_PROBS)),
                                    'relations': list(scenes.RELATIONS), 'striped': scenes.STRIPED_PROB,
                                    'sized_pairs': scenes.SIZED_PROB, 'counts': [2, 3]}} if a.data == 'scenes' else {})},
            'versions': {'python': platform.python_version(), 'torch': torch.__version__, 'numpy': np.__version__,
                         'gpu': torch.cuda.get_device_name(0) if self.gpu else None},
        }
        tmp = os.path.join(a.out, 'hparams.json.tmp')
        with open(tmp, 'w') as f:
            json.dump(hp, f, indent=2)
        os.replace(tmp, os.path.join(a.out, 'hparams.json'))
        self.last_save = time.time()
        log(f'saved {os.path.join(a.out, "model.npz")} (final={final})')

    def run(self):
        a = self.args
        log(f'device {a.device} torch {torch.__version__} numpy {np.__version__} batch {a.batch} '
            f'vae batch {a.vae_batch} minutes {a.minutes}')
        log('parameters: vae encoder {} decoder {} text {} unet {}'.format(
            count_parameters(self.vae.encoder), count_parameters(self.vae.decoder),
            count_parameters(self.text), count_parameters(self.unet)))
        budget = a.minutes * 60.0
        self.t0 = time.time()
        try:
            self.train_vae(budget * a.vae_fraction)
            self.config['scaling_factor'] = (self.init_scaling_factor if self.args.init
                                             else self.measure_scaling_factor(2048 if self.gpu else 256))
            log(f'vae done: {self.stats["vae_steps"]} steps, scaling factor {self.config["scaling_factor"]:.5f}')
            self.save()
            self.train_unet(budget)
            log(f'unet done: {self.stats["unet_steps"]} steps')
        except (Stop, KeyboardInterrupt) as e:
            log(f'interrupted ({e!r}); saving what there is')
        finally:
            if self.config['scaling_factor'] is None:
                self.config['scaling_factor'] = self.measure_scaling_factor(256)
            self.save(final=True)
            self.log_file.close()


def main(argv=None):
    args = parse_args(argv)
    if args.device == 'cpu':
        torch.set_num_threads(args.threads)
    else:
        if not torch.cuda.is_available():
            sys.exit('--device cuda: no CUDA device is visible to torch')
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
    signal.signal(signal.SIGTERM, _on_signal)
    Trainer(args).run()


if __name__ == '__main__':
    main()
