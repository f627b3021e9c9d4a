"""The three networks: a factor-8 VAE, a CLIP-style text encoder and a UNet whose module names follow
diffusers' UNet2DConditionModel (so ONNX node names read like SD's, e.g.
/up_blocks.1/attentions.0/transformer_blocks.0/attn2/Softmax).

Attention is written out (q @ k^T * scale, softmax, @ v) with heads folded into the batch as in diffusers'
classic AttnProcessor, so the export holds one Softmax node per attention layer whose output is
[batch * heads, queries, keys].
"""
import math

import torch
import torch.nn.functional as F
from torch import nn

DEFAULT_CONFIG = {
    'vae': {'channels': [32, 64, 128], 'latent_channels': 4, 'groups': 16},
    'text': {'width': 64, 'layers': 2, 'heads': 4, 'max_length': 77},
    'unet': {'block_out_channels': [64, 96], 'layers_per_block': 1, 'heads': 4, 'groups': 32,
             'ff_mult': 4, 'in_channels': 4, 'out_channels': 4, 'sample_size': 16},
}


# ----------------------------------------------------------------------------------------------- VAE
class VaeResBlock(nn.Module):
    def __init__(self, cin, cout, groups):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, cin, eps=1e-6)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.norm2 = nn.GroupNorm(groups, cout, eps=1e-6)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.nin_shortcut = nn.Conv2d(cin, cout, 1) if cin != cout else None

    def forward(self, x):
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        return (x if self.nin_shortcut is None else self.nin_shortcut(x)) + h


class VaeEncoder(nn.Module):
    """128x128x3 -> 8x16x16 (mean, logvar). Full resolution is only touched by cheap convolutions."""

    def __init__(self, channels, latent_channels, groups):
        super().__init__()
        c0, c1, c2 = channels
        self.conv_in = nn.Conv2d(3, c0, 3, stride=2, padding=1)  # 64
        self.down1 = nn.Conv2d(c0, c1, 3, stride=2, padding=1)  # 32
        self.block1 = VaeResBlock(c1, c1, groups)
        self.down2 = nn.Conv2d(c1, c2, 3, stride=2, padding=1)  # 16
        self.block2 = VaeResBlock(c2, c2, groups)
        self.norm_out = nn.GroupNorm(groups, c2, eps=1e-6)
        self.conv_out = nn.Conv2d(c2, 2 * latent_channels, 3, padding=1)

    def forward(self, x):
        h = F.silu(self.conv_in(x))
        h = self.block1(self.down1(h))
        h = self.block2(self.down2(h))
        return self.conv_out(F.silu(self.norm_out(h)))


class VaeDecoder(nn.Module):
    """4x16x16 -> 3x128x128."""

    def __init__(self, channels, latent_channels, groups):
        super().__init__()
        c0, c1, c2 = channels
        self.conv_in = nn.Conv2d(latent_channels, c2, 3, padding=1)
        self.block0 = VaeResBlock(c2, c2, groups)
        self.up1 = nn.Conv2d(c2, c1, 3, padding=1)  # after 2x upsampling: 32
        self.block1 = VaeResBlock(c1, c1, groups)
        self.up2 = nn.Conv2d(c1, c0, 3, padding=1)  # 64
        self.block2 = VaeResBlock(c0, c0, groups)
        self.up3 = nn.Conv2d(c0, c0 // 2, 3, padding=1)  # 128
        self.norm_out = nn.GroupNorm(groups // 2, c0 // 2, eps=1e-6)
        self.conv_out = nn.Conv2d(c0 // 2, 3, 3, padding=1)

    def forward(self, z):
        h = self.block0(self.conv_in(z))
        h = self.block1(self.up1(F.interpolate(h, scale_factor=2.0, mode='nearest')))
        h = self.block2(self.up2(F.interpolate(h, scale_factor=2.0, mode='nearest')))
        h = self.up3(F.interpolate(h, scale_factor=2.0, mode='nearest'))
        return self.conv_out(F.silu(self.norm_out(h)))


class Vae(nn.Module):
    def __init__(self, channels, latent_channels, groups):
        super().__init__()
        self.encoder = VaeEncoder(channels, latent_channels, groups)
        self.decoder = VaeDecoder(channels, latent_channels, groups)
        self.latent_channels = latent_channels

    def encode(self, x):
        mean, logvar = self.encoder(x).chunk(2, dim=1)
        return mean, logvar.clamp(-30.0, 20.0)


# ------------------------------------------------------------------------------------- text encoder
class ClipAttention(nn.Module):
    def __init__(self, width, heads):
        super().__init__()
        self.heads = heads
        self.q_proj = nn.Linear(width, width)
        self.k_proj = nn.Linear(width, width)
        self.v_proj = nn.Linear(width, width)
        self.out_proj = nn.Linear(width, width)

    def forward(self, x, mask):
        b, n, c = x.shape
        d = c // self.heads

        def split(t):
            return t.reshape(b, n, self.heads, d).transpose(1, 2)

        q, k, v = split(self.q_proj(x)), split(self.k_proj(x)), split(self.v_proj(x))
        w = torch.softmax(q @ k.transpose(-1, -2) * (d ** -0.5) + mask, dim=-1)
        return self.out_proj((w @ v).transpose(1, 2).reshape(b, n, c))


class ClipLayer(nn.Module):
    def __init__(self, width, heads):
        super().__init__()
        self.layer_norm1 = nn.LayerNorm(width)
        self.self_attn = ClipAttention(width, heads)
        self.layer_norm2 = nn.LayerNorm(width)
        self.fc1 = nn.Linear(width, 4 * width)
        self.fc2 = nn.Linear(4 * width, width)

    def forward(self, x, mask):
        x = x + self.self_attn(self.layer_norm1(x), mask)
        h = self.fc1(self.layer_norm2(x))
        h = h * torch.sigmoid(1.702 * h)  # CLIP's quick_gelu
        return x + self.fc2(h)


class TextEncoder(nn.Module):
    """Token + position embeddings, pre-LN causal transformer, final LayerNorm (CLIPTextModel in small).
    pooler_output is the hidden state at the first EOS token, as in CLIP."""

    def __init__(self, vocab_size, eos_id, width, layers, heads, max_length):
        super().__init__()
        self.eos_id = eos_id
        self.token_embedding = nn.Embedding(vocab_size, width)
        self.position_embedding = nn.Embedding(max_length, width)
        self.layers = nn.ModuleList([ClipLayer(width, heads) for _ in range(layers)])
        self.final_layer_norm = nn.LayerNorm(width)
        causal = torch.full((max_length, max_length), float('-inf')).triu(1)
        self.register_buffer('causal_mask', causal, persistent=False)
        self.register_buffer('position_ids', torch.arange(max_length), persistent=False)

    def forward(self, input_ids):
        ids = input_ids.long()
        x = self.token_embedding(ids) + self.position_embedding(self.position_ids)[None]
        for layer in self.layers:
            x = layer(x, self.causal_mask)
        x = self.final_layer_norm(x)
        is_eos = (ids == self.eos_id).float()
        first_eos = is_eos * (torch.cumsum(is_eos, dim=1) == 1).float()
        pooled = (first_eos[:, :, None] * x).sum(1)
        return x, pooled


# --------------------------------------------------------------------------------------------- UNet
def timestep_embedding(timesteps, dim):
    """diffusers' Timesteps(dim, flip_sin_to_cos=True, downscale_freq_shift=0): [cos, sin]."""
    half = dim // 2
    exponent = -math.log(10000.0) * torch.arange(half, dtype=torch.float32, device=timesteps.device) / half
    args = timesteps.float()[:, None] * torch.exp(exponent)[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class TimestepEmbedding(nn.Module):
    def __init__(self, cin, dim):
        super().__init__()
        self.linear_1 = nn.Linear(cin, dim)
        self.linear_2 = nn.Linear(dim, dim)

    def forward(self, x):
        return self.linear_2(F.silu(self.linear_1(x)))


class ResnetBlock2D(nn.Module):
    def __init__(self, cin, cout, temb, groups):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, cin, eps=1e-5)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.time_emb_proj = nn.Linear(temb, cout)
        self.norm2 = nn.GroupNorm(groups, cout, eps=1e-5)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.conv_shortcut = nn.Conv2d(cin, cout, 1) if cin != cout else None

    def forward(self, x, temb):
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.time_emb_proj(F.silu(temb))[:, :, None, None]
        h = self.conv2(F.silu(self.norm2(h)))
        return (x if self.conv_shortcut is None else self.conv_shortcut(x)) + h


class Attention(nn.Module):
    def __init__(self, query_dim, heads, context_dim=None):
        super().__init__()
        self.heads = heads
        self.scale = (query_dim // heads) ** -0.5
        context_dim = context_dim or query_dim
        self.to_q = nn.Linear(query_dim, query_dim, bias=False)
        self.to_k = nn.Linear(context_dim, query_dim, bias=False)
        self.to_v = nn.Linear(context_dim, query_dim, bias=False)
        self.to_out = nn.ModuleList([nn.Linear(query_dim, query_dim), nn.Dropout(0.0)])

    def _heads_to_batch(self, t):
        b, n, c = t.shape
        return t.reshape(b, n, self.heads, c // self.heads).permute(0, 2, 1, 3).reshape(b * self.heads, n, c // self.heads)

    def forward(self, x, context=None):
        b, n, c = x.shape
        context = x if context is None else context
        q = self._heads_to_batch(self.to_q(x))
        k = self._heads_to_batch(self.to_k(context))
        v = self._heads_to_batch(self.to_v(context))
        probs = torch.softmax(torch.matmul(q, k.transpose(-1, -2)) * self.scale, dim=-1)
        out = torch.matmul(probs, v)
        out = out.reshape(b, self.heads, n, c // self.heads).permute(0, 2, 1, 3).reshape(b, n, c)
        return self.to_out[1](self.to_out[0](out))


class GEGLU(nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        self.proj = nn.Linear(cin, 2 * cout)

    def forward(self, x):
        h, gate = self.proj(x).chunk(2, dim=-1)
        return h * F.gelu(gate)


class FeedForward(nn.Module):
    def __init__(self, dim, mult):
        super().__init__()
        self.net = nn.ModuleList([GEGLU(dim, dim * mult), nn.Dropout(0.0), nn.Linear(dim * mult, dim)])

    def forward(self, x):
        for m in self.net:
            x = m(x)
        return x


class BasicTransformerBlock(nn.Module):
    def __init__(self, dim, heads, context_dim, ff_mult):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn1 = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.attn2 = Attention(dim, heads, context_dim)
        self.norm3 = nn.LayerNorm(dim)
        self.ff = FeedForward(dim, ff_mult)

    def forward(self, x, context):
        x = x + self.attn1(self.norm1(x))
        x = x + self.attn2(self.norm2(x), context)
        return x + self.ff(self.norm3(x))


class Transformer2DModel(nn.Module):
    def __init__(self, channels, heads, context_dim, groups, ff_mult):
        super().__init__()
        self.norm = nn.GroupNorm(groups, channels, eps=1e-6)
        self.proj_in = nn.Conv2d(channels, channels, 1)
        self.transformer_blocks = nn.ModuleList([BasicTransformerBlock(channels, heads, context_dim, ff_mult)])
        self.proj_out = nn.Conv2d(channels, channels, 1)

    def forward(self, x, context):
        b, c, h, w = x.shape
        t = self.proj_in(self.norm(x))
        t = t.permute(0, 2, 3, 1).reshape(b, h * w, c)
        for block in self.transformer_blocks:
            t = block(t, context)
        t = t.reshape(b, h, w, c).permute(0, 3, 1, 2)
        return x + self.proj_out(t)


class Downsample2D(nn.Module):
    def __init__(self, channels):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x):
        return self.conv(x)


class Upsample2D(nn.Module):
    def __init__(self, channels):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x):
        return self.conv(F.interpolate(x, scale_factor=2.0, mode='nearest'))


class CrossAttnDownBlock2D(nn.Module):
    def __init__(self, cin, cout, temb, layers, heads, context_dim, groups, ff_mult, add_downsample):
        super().__init__()
        self.resnets = nn.ModuleList([ResnetBlock2D(cin if i == 0 else cout, cout, temb, groups) for i in range(layers)])
        self.attentions = nn.ModuleList([Transformer2DModel(cout, heads, context_dim, groups, ff_mult) for _ in range(layers)])
        self.downsamplers = nn.ModuleList([Downsample2D(cout)]) if add_downsample else None

    def forward(self, x, temb, context):
        skips = []
        for resnet, attn in zip(self.resnets, self.attentions):
            x = attn(resnet(x, temb), context)
            skips.append(x)
        if self.downsamplers is not None:
            x = self.downsamplers[0](x)
            skips.append(x)
        return x, skips


class UNetMidBlock2DCrossAttn(nn.Module):
    def __init__(self, channels, temb, heads, context_dim, groups, ff_mult):
        super().__init__()
        self.resnets = nn.ModuleList([ResnetBlock2D(channels, channels, temb, groups) for _ in range(2)])
        self.attentions = nn.ModuleList([Transformer2DModel(channels, heads, context_dim, groups, ff_mult)])

    def forward(self, x, temb, context):
        x = self.resnets[0](x, temb)
        x = self.attentions[0](x, context)
        return self.resnets[1](x, temb)


class CrossAttnUpBlock2D(nn.Module):
    def __init__(self, cin, cout, prev_out, skip_channels, temb, heads, context_dim, groups, ff_mult, add_upsample):
        super().__init__()
        resnets = []
        for i, skip in enumerate(skip_channels):
            resnets.append(ResnetBlock2D((prev_out if i == 0 else cout) + skip, cout, temb, groups))
        self.resnets = nn.ModuleList(resnets)
        self.attentions = nn.ModuleList([Transformer2DModel(cout, heads, context_dim, groups, ff_mult)
                                         for _ in skip_channels])
        self.upsamplers = nn.ModuleList([Upsample2D(cout)]) if add_upsample else None

    def forward(self, x, skips, temb, context):
        for resnet, attn in zip(self.resnets, self.attentions):
            x = torch.cat([x, skips.pop()], dim=1)
            x = attn(resnet(x, temb), context)
        if self.upsamplers is not None:
            x = self.upsamplers[0](x)
        return x


class UNet2DConditionModel(nn.Module):
    """SD-style UNet with every block cross-attending (CrossAttnDown/Up blocks at all levels).
    Latent sides must be divisible by 2 ** (levels - 1)."""

    def __init__(self, block_out_channels, layers_per_block, heads, groups, ff_mult, in_channels, out_channels,
                 cross_attention_dim, sample_size=16):
        super().__init__()
        ch = list(block_out_channels)
        temb = ch[0] * 4
        self.time_channels = ch[0]
        self.conv_in = nn.Conv2d(in_channels, ch[0], 3, padding=1)
        self.time_embedding = TimestepEmbedding(ch[0], temb)
        self.down_blocks = nn.ModuleList()
        skip_channels = [ch[0]]
        for i, c in enumerate(ch):
            last = i == len(ch) - 1
            cin = ch[max(i - 1, 0)]
            self.down_blocks.append(CrossAttnDownBlock2D(cin, c, temb, layers_per_block, heads, cross_attention_dim,
                                                         groups, ff_mult, add_downsample=not last))
            skip_channels += [c] * layers_per_block + ([] if last else [c])
        self.mid_block = UNetMidBlock2DCrossAttn(ch[-1], temb, heads, cross_attention_dim, groups, ff_mult)
        self.up_blocks = nn.ModuleList()
        prev = ch[-1]
        for i, c in enumerate(reversed(ch)):
            last = i == len(ch) - 1
            mine = [skip_channels.pop() for _ in range(layers_per_block + 1)]
            self.up_blocks.append(CrossAttnUpBlock2D(prev, c, prev, mine, temb, heads, cross_attention_dim, groups,
                                                     ff_mult, add_upsample=not last))
            prev = c
        self.conv_norm_out = nn.GroupNorm(groups, ch[0], eps=1e-5)
        self.conv_out = nn.Conv2d(ch[0], out_channels, 3, padding=1)

    def forward(self, sample, timestep, encoder_hidden_states):
        temb = self.time_embedding(timestep_embedding(timestep, self.time_channels).to(sample.dtype))
        x = self.conv_in(sample)
        skips = [x]
        for block in self.down_blocks:
            x, s = block(x, temb, encoder_hidden_states)
            skips += s
        x = self.mid_block(x, temb, encoder_hidden_states)
        for block in self.up_blocks:
            x = block(x, skips, temb, encoder_hidden_states)
        return self.conv_out(F.silu(self.conv_norm_out(x)))


def build_models(config, vocab_size, eos_id):
    v, t, u = config['vae'], config['text'], config['unet']
    vae = Vae(v['channels'], v['latent_channels'], v['groups'])
    text = TextEncoder(vocab_size, eos_id, t['width'], t['layers'], t['heads'], t['max_length'])
    unet = UNet2DConditionModel(u['block_out_channels'], u['layers_per_block'], u['heads'], u['groups'],
                                u['ff_mult'], u['in_channels'], u['out_channels'], t['width'], u['sample_size'])
    return vae, text, unet


def count_parameters(module):
    return sum(p.numel() for p in module.parameters())
