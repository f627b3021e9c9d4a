"""SD-sized UNets with random weights, in torch, for timings: SD 1.5 and SDXL layouts.

Module names follow diffusers' UNet2DConditionModel (down_blocks.N.resnets.M, .attentions.M.transformer_blocks.K.attn2,
mid_block, up_blocks, add_embedding), so an ONNX export's node names read like an SD export's (for example
/up_blocks.1/attentions.0/transformer_blocks.0/attn2/Softmax, which the project's attention probe looks for).
The small blocks (ResnetBlock2D, time embedding, feed-forward, up/down sampling) are the shipped model's, from
training/models.py; this file adds what the SD layouts need on top: blocks without attention, several transformer
blocks per attention, linear proj_in/proj_out, heads given by head size, and SDXL's text_time added embedding.

Attention has two forms with the same weights: written out (q·kᵀ·scale, Softmax, ·v; what the export holds, as
optimum's exports do after the exporter decomposes attention) and torch's fused scaled_dot_product_attention
(torch >= 2.0) for the eager PyTorch timing. `set_fused_attention(model, True/False)` switches.
"""
import copy
import os
import sys

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', '..', 'training'))

from models import (  # noqa: E402
    Downsample2D, FeedForward, ResnetBlock2D, TimestepEmbedding, Upsample2D, timestep_embedding,
)

HAS_SDPA = hasattr(F, 'scaled_dot_product_attention')

# The real layer widths, depths and heads (diffusers' configs of runwayml/stable-diffusion-v1-5 and
# stabilityai/stable-diffusion-xl-base-1.0).
CONFIGS = {
    'sd15': {
        'block_out_channels': [320, 640, 1280, 1280],
        'down_block_types': ['CrossAttnDownBlock2D'] * 3 + ['DownBlock2D'],
        'up_block_types': ['UpBlock2D'] + ['CrossAttnUpBlock2D'] * 3,
        'layers_per_block': 2,
        'transformer_layers_per_block': [1, 1, 1, 1],
        'heads': 8,  # SD 1.x: 8 heads at every level (its config calls it attention_head_dim)
        'head_dim': None,
        'cross_attention_dim': 768,
        'use_linear_projection': False,
        'addition_embed_type': None,
        'sample_size': 64,
        'groups': 32,
    },
    'sdxl': {
        'block_out_channels': [320, 640, 1280],
        'down_block_types': ['DownBlock2D', 'CrossAttnDownBlock2D', 'CrossAttnDownBlock2D'],
        'up_block_types': ['CrossAttnUpBlock2D', 'CrossAttnUpBlock2D', 'UpBlock2D'],
        'layers_per_block': 2,
        'transformer_layers_per_block': [1, 2, 10],
        'heads': None,
        'head_dim': 64,  # heads 5 / 10 / 20
        'cross_attention_dim': 2048,
        'use_linear_projection': True,
        'addition_embed_type': 'text_time',
        'addition_time_embed_dim': 256,
        'projection_class_embeddings_input_dim': 2816,  # 1280 pooled + 6 * 256
        'text_embeds_dim': 1280,
        'sample_size': 128,
        'groups': 32,
    },
}


def scaled_config(name, width_div=1, max_layers=None, max_depth=None, cross_attention_dim=None, text_embeds_dim=None,
                  sample_size=None):
    """A config with the same layout and smaller sizes: widths divided by width_div (rounded to a multiple of 32,
    the GroupNorm group count), layers per block and transformer depth capped, other text widths, another native
    latent size. width_div=1 and no caps give the real config."""
    cfg = copy.deepcopy(CONFIGS[name])

    def width(c):
        return max(32, int(round(c / width_div / 32)) * 32)

    cfg['block_out_channels'] = [width(c) for c in cfg['block_out_channels']]
    if cfg['head_dim'] is not None and width_div != 1:
        cfg['head_dim'] = max(8, int(cfg['head_dim'] // width_div) // 8 * 8)
    if max_layers is not None:
        cfg['layers_per_block'] = min(cfg['layers_per_block'], max_layers)
    if max_depth is not None:
        cfg['transformer_layers_per_block'] = [min(d, max_depth) for d in cfg['transformer_layers_per_block']]
    if cross_attention_dim is not None:
        cfg['cross_attention_dim'] = cross_attention_dim
    if cfg['addition_embed_type'] == 'text_time':
        if text_embeds_dim is not None:
            cfg['text_embeds_dim'] = text_embeds_dim
        if width_div != 1:
            cfg['addition_time_embed_dim'] = max(8, int(cfg['addition_time_embed_dim'] // width_div) // 2 * 2)
        cfg['projection_class_embeddings_input_dim'] = cfg['text_embeds_dim'] + 6 * cfg['addition_time_embed_dim']
    if sample_size is not None:
        cfg['sample_size'] = sample_size
    return cfg


def heads_for(cfg, channels):
    return cfg['heads'] if cfg['heads'] is not None else max(1, channels // cfg['head_dim'])


class Attention(nn.Module):
    """diffusers' Attention (to_q, to_k, to_v without bias, to_out.0 with bias)."""

    def __init__(self, query_dim, heads, context_dim=None):
        super().__init__()
        self.heads = heads
        self.head_dim = query_dim // heads
        self.scale = self.head_dim ** -0.5
        context_dim = context_dim or query_dim
        self.to_q = nn.Linear(query_dim, query_dim, bias=False)
        self.to_k = nn.Linear(context_dim, query_dim, bias=False)
        self.to_v = nn.Linear(context_dim, query_dim, bias=False)
        self.to_out = nn.ModuleList([nn.Linear(query_dim, query_dim), nn.Dropout(0.0)])
        self.fused = False

    def forward(self, x, context=None):
        b, n, c = x.shape
        context = x if context is None else context
        q, k, v = self.to_q(x), self.to_k(context), self.to_v(context)
        if self.fused:
            q, k, v = (t.reshape(b, -1, self.heads, self.head_dim).transpose(1, 2) for t in (q, k, v))
            out = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, c)
        else:
            # Heads folded into the batch, as diffusers' classic AttnProcessor: one Softmax over [b*heads, n, keys].
            def fold(t):
                return t.reshape(b, -1, self.heads, self.head_dim).permute(0, 2, 1, 3).reshape(b * self.heads, -1, self.head_dim)

            q, k, v = fold(q), fold(k), fold(v)
            probs = torch.softmax(torch.matmul(q, k.transpose(-1, -2)) * self.scale, dim=-1)
            out = torch.matmul(probs, v).reshape(b, self.heads, n, self.head_dim).permute(0, 2, 1, 3).reshape(b, n, c)
        return self.to_out[1](self.to_out[0](out))


class BasicTransformerBlock(nn.Module):
    def __init__(self, dim, heads, context_dim):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn1 = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.attn2 = Attention(dim, heads, context_dim)
        self.norm3 = nn.LayerNorm(dim)
        self.ff = FeedForward(dim, 4)

    def forward(self, x, context):
        x = x + self.attn1(self.norm1(x))
        x = x + self.attn2(self.norm2(x), context)
        return x + self.ff(self.norm3(x))


class Transformer2DModel(nn.Module):
    """GroupNorm, proj_in (1x1 conv in SD 1.x, linear in SDXL), `depth` transformer blocks, proj_out, residual."""

    def __init__(self, channels, heads, context_dim, groups, depth, linear):
        super().__init__()
        self.linear = linear
        self.norm = nn.GroupNorm(groups, channels, eps=1e-6)
        self.proj_in = nn.Linear(channels, channels) if linear else nn.Conv2d(channels, channels, 1)
        self.transformer_blocks = nn.ModuleList([BasicTransformerBlock(channels, heads, context_dim) for _ in range(depth)])
        self.proj_out = nn.Linear(channels, channels) if linear else nn.Conv2d(channels, channels, 1)

    def forward(self, x, context):
        b, c, h, w = x.shape
        t = self.norm(x)
        if self.linear:
            t = self.proj_in(t.permute(0, 2, 3, 1).reshape(b, h * w, c))
        else:
            t = self.proj_in(t).permute(0, 2, 3, 1).reshape(b, h * w, c)
        for block in self.transformer_blocks:
            t = block(t, context)
        if self.linear:
            t = self.proj_out(t).reshape(b, h, w, c).permute(0, 3, 1, 2)
        else:
            t = self.proj_out(t.reshape(b, h, w, c).permute(0, 3, 1, 2))
        return x + t


def make_transformer(cfg, channels, depth):
    return Transformer2DModel(channels, heads_for(cfg, channels), cfg['cross_attention_dim'], cfg['groups'], depth,
                              cfg['use_linear_projection'])


class DownBlock(nn.Module):
    """CrossAttnDownBlock2D (attention after each resnet) or DownBlock2D (depth None: resnets only)."""

    def __init__(self, cfg, cin, cout, temb, depth, add_downsample):
        super().__init__()
        n = cfg['layers_per_block']
        g = cfg['groups']
        self.resnets = nn.ModuleList([ResnetBlock2D(cin if i == 0 else cout, cout, temb, g) for i in range(n)])
        if depth is not None:
            self.attentions = nn.ModuleList([make_transformer(cfg, cout, depth) for _ in range(n)])
        else:
            self.attentions = None
        self.downsamplers = nn.ModuleList([Downsample2D(cout)]) if add_downsample else None

    def forward(self, x, temb, context):
        skips = []
        for i, resnet in enumerate(self.resnets):
            x = resnet(x, temb)
            if self.attentions is not None:
                x = self.attentions[i](x, context)
            skips.append(x)
        if self.downsamplers is not None:
            x = self.downsamplers[0](x)
            skips.append(x)
        return x, skips


class UpBlock(nn.Module):
    """CrossAttnUpBlock2D or UpBlock2D (depth None): layers_per_block + 1 resnets, each on a concatenated skip."""

    def __init__(self, cfg, cout, prev_out, skip_channels, temb, depth, add_upsample):
        super().__init__()
        g = cfg['groups']
        self.resnets = nn.ModuleList([ResnetBlock2D((prev_out if i == 0 else cout) + s, cout, temb, g)
                                      for i, s in enumerate(skip_channels)])
        if depth is not None:
            self.attentions = nn.ModuleList([make_transformer(cfg, cout, depth) for _ in skip_channels])
        else:
            self.attentions = None
        self.upsamplers = nn.ModuleList([Upsample2D(cout)]) if add_upsample else None

    def forward(self, x, skips, temb, context):
        for i, resnet in enumerate(self.resnets):
            x = resnet(torch.cat([x, skips.pop()], dim=1), temb)
            if self.attentions is not None:
                x = self.attentions[i](x, context)
        if self.upsamplers is not None:
            x = self.upsamplers[0](x)
        return x


class MidBlock(nn.Module):
    """UNetMidBlock2DCrossAttn: resnet, transformer (depth of the deepest level), resnet."""

    def __init__(self, cfg, channels, temb, depth):
        super().__init__()
        self.resnets = nn.ModuleList([ResnetBlock2D(channels, channels, temb, cfg['groups']) for _ in range(2)])
        self.attentions = nn.ModuleList([make_transformer(cfg, channels, depth)])

    def forward(self, x, temb, context):
        x = self.resnets[0](x, temb)
        x = self.attentions[0](x, context)
        return self.resnets[1](x, temb)


class SdUnet(nn.Module):
    """UNet2DConditionModel for the SD 1.5 and SDXL layouts. forward(sample, timestep[B], encoder_hidden_states
    [, text_embeds, time_ids]) -> noise prediction, the ONNX contract's inputs in order."""

    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        ch = list(cfg['block_out_channels'])
        depths = cfg['transformer_layers_per_block']
        temb = ch[0] * 4
        self.time_channels = ch[0]
        self.sdxl = cfg['addition_embed_type'] == 'text_time'
        self.conv_in = nn.Conv2d(4, ch[0], 3, padding=1)
        self.time_embedding = TimestepEmbedding(ch[0], temb)
        if self.sdxl:
            self.add_time_dim = cfg['addition_time_embed_dim']
            self.add_embedding = TimestepEmbedding(cfg['projection_class_embeddings_input_dim'], temb)
        self.down_blocks = nn.ModuleList()
        skips = [ch[0]]
        for i, (c, kind) in enumerate(zip(ch, cfg['down_block_types'])):
            last = i == len(ch) - 1
            depth = depths[i] if kind == 'CrossAttnDownBlock2D' else None
            self.down_blocks.append(DownBlock(cfg, ch[max(i - 1, 0)], c, temb, depth, add_downsample=not last))
            skips += [c] * cfg['layers_per_block'] + ([] if last else [c])
        self.mid_block = MidBlock(cfg, ch[-1], temb, depths[-1])
        self.up_blocks = nn.ModuleList()
        prev = ch[-1]
        rev_depths = list(reversed(depths))
        for i, (c, kind) in enumerate(zip(reversed(ch), cfg['up_block_types'])):
            last = i == len(ch) - 1
            mine = [skips.pop() for _ in range(cfg['layers_per_block'] + 1)]
            depth = rev_depths[i] if kind == 'CrossAttnUpBlock2D' else None
            self.up_blocks.append(UpBlock(cfg, c, prev, mine, temb, depth, add_upsample=not last))
            prev = c
        self.conv_norm_out = nn.GroupNorm(cfg['groups'], ch[0], eps=1e-5)
        self.conv_out = nn.Conv2d(ch[0], 4, 3, padding=1)

    def forward(self, sample, timestep, encoder_hidden_states, text_embeds=None, time_ids=None):
        emb = self.time_embedding(timestep_embedding(timestep, self.time_channels).to(sample.dtype))
        if self.sdxl:
            b = time_ids.shape[0]
            # add_time_proj: each of the 6 ids through the sinusoidal embedding, then with the pooled text embeddings.
            ids = timestep_embedding(time_ids.reshape(-1), self.add_time_dim).reshape(b, -1)
            emb = emb + self.add_embedding(torch.cat([text_embeds, ids.to(text_embeds.dtype)], dim=-1))
        x = self.conv_in(sample)
        skips = [x]
        for block in self.down_blocks:
            x, s = block(x, emb, encoder_hidden_states)
            skips += s
        x = self.mid_block(x, emb, encoder_hidden_states)
        for block in self.up_blocks:
            x = block(x, skips, emb, encoder_hidden_states)
        return self.conv_out(F.silu(self.conv_norm_out(x)))


def set_fused_attention(model, fused):
    for m in model.modules():
        if isinstance(m, Attention):
            m.fused = bool(fused) and HAS_SDPA


def count_parameters(model):
    return sum(p.numel() for p in model.parameters())


def diffusers_config(cfg):
    """unet/config.json in diffusers' words (the project's loader reads sample_size)."""
    out = {
        '_class_name': 'UNet2DConditionModel',
        'act_fn': 'silu',
        'block_out_channels': cfg['block_out_channels'],
        'cross_attention_dim': cfg['cross_attention_dim'],
        'down_block_types': cfg['down_block_types'],
        'up_block_types': cfg['up_block_types'],
        'flip_sin_to_cos': True,
        'freq_shift': 0,
        'in_channels': 4,
        'out_channels': 4,
        'layers_per_block': cfg['layers_per_block'],
        'norm_num_groups': cfg['groups'],
        'norm_eps': 1e-5,
        'sample_size': cfg['sample_size'],
        'transformer_layers_per_block': cfg['transformer_layers_per_block'],
        'use_linear_projection': cfg['use_linear_projection'],
        'attention_head_dim': cfg['heads'] if cfg['heads'] is not None else
        [heads_for(cfg, c) for c in cfg['block_out_channels']],
        'random_weights': True,
    }
    if cfg['addition_embed_type']:
        out['addition_embed_type'] = cfg['addition_embed_type']
        out['addition_time_embed_dim'] = cfg['addition_time_embed_dim']
        out['projection_class_embeddings_input_dim'] = cfg['projection_class_embeddings_input_dim']
    return out
