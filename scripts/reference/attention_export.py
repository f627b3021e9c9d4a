"""One attention block as one of diffusers' attention processors computes it, exported to ONNX by torch's TorchScript
exporter: the graphs that real SD exports hold, for the attention fusion (src/graph/attention-fusion.ts) to be checked
on (test/attention-fusion.test.ts; part `fusion` of scripts/device/card.sh on the card's torch).

--processor classic (default; diffusers' AttnProcessor, the default before torch 2, so SD exports made with torch 1.x):
- head_to_batch_dim: [B, S, H*d] -> reshape [B, S, H, d] -> permute (0 2 1 3) -> reshape [B*H, S, d], with the sizes
  read from the tensor itself;
- get_attention_scores without a mask: baddbmm(empty(B*H, S, L), q, k^T, beta=0, alpha=scale), softmax over the keys;
- bmm with v, then batch_to_head_dim: reshape [B, H, S, d] -> permute -> reshape [B, S, H*d], sizes read from the
  tensor; to_out.
--processor sdpa (diffusers' AttnProcessor2_0, torch >= 2.0: what exports made with torch 2 hold):
- view [B, -1, H, d] -> transpose (1, 2); F.scaled_dot_product_attention at its default scale; transpose (1, 2) ->
  reshape [B, -1, H*d]; to_out. Exits with code 3 (writing meta.json with "unsupported") where torch has no
  scaled_dot_product_attention.

--exporter dynamo: torch's dynamo exporter (opset 18; the default of torch.onnx.export from torch 2.9) instead of
the TorchScript one; exit code 3 ("unsupported") where this torch or its onnxscript lacks it. Its exports of both
processors by torch 2.13 are committed in test/fixtures/dynamo-attention (README there).
--static (with --exporter dynamo): the traced sizes, no dynamic axes (what an export without dynamic shapes holds: the
sizes, and baddbmm's zeros, folded to constants).

Usage: attention_export.py OUT_DIR [--processor classic|sdpa] [--exporter torchscript|dynamo] [--static]. Writes OUT_DIR/attention.onnx (float32, dynamic batch
and lengths; the attention at the module path up_blocks.0.attentions.0.transformer_blocks.0.attn2), OUT_DIR/x.f32, context.f32 and y.f32 (raw little-endian float32: the inputs and torch's output for
them) and OUT_DIR/meta.json (shapes, heads, scale, processor, torch's version).
"""
import argparse
import inspect
import json
import os

import torch
import torch.nn.functional as F

DIM, CONTEXT, HEADS = 40, 24, 5
B, S, L = 2, 12, 7


class Attention(torch.nn.Module):
    def __init__(self, processor):
        super().__init__()
        self.heads = HEADS
        self.scale = (DIM // HEADS) ** -0.5
        self.processor = processor
        self.to_q = torch.nn.Linear(DIM, DIM, bias=False)
        self.to_k = torch.nn.Linear(CONTEXT, DIM, bias=False)
        self.to_v = torch.nn.Linear(CONTEXT, DIM, bias=False)
        self.to_out = torch.nn.Linear(DIM, DIM)

    def head_to_batch_dim(self, t):
        batch, seq, dim = t.shape
        t = t.reshape(batch, seq, self.heads, dim // self.heads).permute(0, 2, 1, 3)
        return t.reshape(batch * self.heads, seq, dim // self.heads)

    def batch_to_head_dim(self, t):
        batch, seq, dim = t.shape
        t = t.reshape(batch // self.heads, self.heads, seq, dim).permute(0, 2, 1, 3)
        return t.reshape(batch // self.heads, seq, dim * self.heads)

    def forward(self, x, context):
        if self.processor == 'sdpa':
            batch = x.shape[0]
            q, k, v = self.to_q(x), self.to_k(context), self.to_v(context)
            head_dim = k.shape[-1] // self.heads
            q, k, v = (t.view(batch, -1, self.heads, head_dim).transpose(1, 2) for t in (q, k, v))
            out = F.scaled_dot_product_attention(q, k, v)
            return self.to_out(out.transpose(1, 2).reshape(batch, -1, self.heads * head_dim))
        q = self.head_to_batch_dim(self.to_q(x))
        k = self.head_to_batch_dim(self.to_k(context))
        v = self.head_to_batch_dim(self.to_v(context))
        empty = torch.empty(q.shape[0], q.shape[1], k.shape[1], dtype=q.dtype, device=q.device)
        scores = torch.baddbmm(empty, q, k.transpose(-1, -2), beta=0, alpha=self.scale)
        probs = scores.softmax(dim=-1)
        return self.to_out(self.batch_to_head_dim(torch.bmm(probs, v)))


class Holder(torch.nn.Module):
    """One level of module path: `name.0` (a ModuleList) or `name` holding `inner`, whose forward it calls (the
    TorchScript exporter names scopes after the modules whose forward runs)."""

    def __init__(self, name, inner, listed):
        super().__init__()
        self.name, self.listed = name, listed
        setattr(self, name, torch.nn.ModuleList([inner]) if listed else inner)

    def forward(self, x, context):
        inner = getattr(self, self.name)
        return (inner[0] if self.listed else inner)(x, context)


def up_block_path(attn):
    """The attention at the module path of an SD UNet's first up-block cross-attention,
    up_blocks.0.attentions.0.transformer_blocks.0.attn2, so that the export names its scope (or, by the dynamo exporter,
    records it in node metadata) as SD exports do: for the attention-probe scan (src/graph/attention-probe.ts)."""
    m = Holder('attn2', attn, False)
    for name in ('transformer_blocks', 'attentions', 'up_blocks'):
        m = Holder(name, m, True)
    return m


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('out')
    ap.add_argument('--processor', choices=['classic', 'sdpa'], default='classic')
    ap.add_argument('--exporter', choices=['torchscript', 'dynamo'], default='torchscript')
    ap.add_argument('--static', action='store_true', help='dynamo: export at the traced sizes, no dynamic axes')
    a = ap.parse_args()
    if a.static and a.exporter != 'dynamo':
        ap.error('--static is for --exporter dynamo')
    os.makedirs(a.out, exist_ok=True)
    meta = {'processor': a.processor, 'exporter': a.exporter, 'torch': torch.__version__, 'heads': HEADS,
            'scale': (DIM // HEADS) ** -0.5}
    params = inspect.signature(torch.onnx.export).parameters

    def unsupported(why):
        meta['unsupported'] = why
        json.dump(meta, open(os.path.join(a.out, 'meta.json'), 'w'))
        raise SystemExit(3)

    if a.processor == 'sdpa' and not hasattr(F, 'scaled_dot_product_attention'):
        unsupported(f'torch {torch.__version__} has no scaled_dot_product_attention (torch >= 2.0)')
    if a.exporter == 'dynamo':
        if 'dynamo' not in params:
            unsupported(f'torch {torch.__version__} has no dynamo exporter in torch.onnx.export')
        try:
            import onnxscript  # noqa: F401  (the dynamo exporter needs it)
        except ImportError:
            unsupported('the dynamo exporter needs onnxscript, which is not installed')
    torch.manual_seed(0)
    model = up_block_path(Attention(a.processor)).eval()
    x = torch.randn(B, S, DIM)
    context = torch.randn(B, L, CONTEXT)
    with torch.no_grad():
        y = model(x, context)
    path = os.path.join(a.out, 'attention.onnx')
    axes = {'x': {0: 'batch', 1: 'seq'}, 'context': {0: 'batch', 1: 'keys'}}
    if a.exporter == 'torchscript':
        kwargs = {'dynamo': False} if 'dynamo' in params else {}  # the exporter the SD exports in use were made with
        torch.onnx.export(model, (x, context), path, input_names=['x', 'context'], output_names=['y'], opset_version=14,
                          dynamic_axes=axes, **kwargs)
    else:
        kwargs = {'external_data': False} if 'external_data' in params else {}  # one file, read as bytes
        meta['dynamic'] = False
        if not a.static:
            try:
                torch.onnx.export(model, (x, context), path, input_names=['x', 'context'], output_names=['y'],
                                  opset_version=18, dynamo=True, dynamic_axes=axes, **kwargs)
                meta['dynamic'] = True
            except Exception as err:  # dynamic shapes the exporter could not handle: the traced sizes
                meta['dynamic_error'] = f'{type(err).__name__}: {str(err)[:300]}'
        if not meta['dynamic']:
            torch.onnx.export(model, (x, context), path, input_names=['x', 'context'], output_names=['y'],
                              opset_version=18, dynamo=True, **kwargs)
    for name, t in (('x', x), ('context', context), ('y', y)):
        t.contiguous().numpy().astype('<f4').tofile(os.path.join(a.out, name + '.f32'))
    meta.update({'x': list(x.shape), 'context': list(context.shape), 'y': list(y.shape)})
    json.dump(meta, open(os.path.join(a.out, 'meta.json'), 'w'))


if __name__ == '__main__':
    main()
