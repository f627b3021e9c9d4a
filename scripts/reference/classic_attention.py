"""One attention block written as diffusers' classic attention processor computes it (AttnProcessor, the default
before torch 2's scaled-dot-product attention), exported to ONNX by torch's TorchScript exporter: the graph real
SD 1.x / 2.x exports made with torch 1.x hold, for the attention fusion's test (test/attention-fusion.test.ts).

- head_to_batch_dim: [B, S, H*d] -> reshape [B, S, H, d] -> permute (0 2 1 3) -> reshape [B*H, S, d], with the sizes
  read from the tensor itself;
- get_attention_scores without a mask: baddbmm(empty(B*H, S, L), q, k^T, beta=0, alpha=scale), softmax over the keys;
- bmm with v, then batch_to_head_dim: reshape [B, H, S, d] -> permute -> reshape [B, S, H*d], sizes read from the
  tensor; to_out.

Usage: classic_attention.py OUT_DIR. Writes OUT_DIR/attention.onnx (float32, dynamic batch and lengths),
OUT_DIR/x.f32, context.f32 and y.f32 (raw little-endian float32: the inputs and torch's output for them) and
OUT_DIR/meta.json (shapes, heads, scale, torch's version).
"""
import json
import os
import sys

import torch

DIM, CONTEXT, HEADS = 40, 24, 5
B, S, L = 2, 12, 7


class ClassicAttention(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.heads = HEADS
        self.scale = (DIM // HEADS) ** -0.5
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
        q = self.head_to_batch_dim(self.to_q(x))
        k = self.head_to_batch_dim(self.to_k(context))
        v = self.head_to_batch_dim(self.to_v(context))
        empty = torch.empty(q.shape[0], q.shape[1], k.shape[1], dtype=q.dtype, device=q.device)
        scores = torch.baddbmm(empty, q, k.transpose(-1, -2), beta=0, alpha=self.scale)
        probs = scores.softmax(dim=-1)
        return self.to_out(self.batch_to_head_dim(torch.bmm(probs, v)))


def export(model, args, path):
    torch.onnx.export(model, args, path, input_names=['x', 'context'], output_names=['y'], opset_version=14,
                      dynamic_axes={'x': {0: 'batch', 1: 'seq'}, 'context': {0: 'batch', 1: 'keys'}})


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    torch.manual_seed(0)
    model = ClassicAttention().eval()
    x = torch.randn(B, S, DIM)
    context = torch.randn(B, L, CONTEXT)
    with torch.no_grad():
        y = model(x, context)
    export(model, (x, context), os.path.join(out, 'attention.onnx'))
    for name, t in (('x', x), ('context', context), ('y', y)):
        t.contiguous().numpy().astype('<f4').tofile(os.path.join(out, name + '.f32'))
    meta = {'x': list(x.shape), 'context': list(context.shape), 'y': list(y.shape), 'heads': HEADS,
            'scale': (DIM // HEADS) ** -0.5, 'torch': torch.__version__}
    json.dump(meta, open(os.path.join(out, 'meta.json'), 'w'))


if __name__ == '__main__':
    main()
