"""SD-sized random-weight UNets (SD 1.5, SDXL): PyTorch timing and ONNX export, one model at a time.

    python3 scripts/device/sd_models.py --model sd15 --out-dir .cache/card --json torch-sd15.json
    python3 scripts/device/sd_models.py --model sdxl --small --device cpu --out-dir /tmp/x --json /tmp/x/t.json

For each model: builds it (seeded random weights, the real widths / depths / heads unless --small or the
scale options shrink them), times one UNet call in PyTorch eager at batch 2, 1 and 4 (warm-up, then the
median of --iters; on CUDA in float16 with scaled-dot-product attention where torch has it), then exports the same
weights to ONNX (float16 by default, weights in one external-data file) as <out-dir>/<model>/unet/model.onnx with
the project's contract IO: sample [B,4,h,w], timestep int64 [B], encoder_hidden_states [B,77,D] and for SDXL
text_embeds [B,P] and time_ids [B,6]; output out_sample. Batch, height and width are dynamic.
Writes the measurements and the export's IO as JSON (--json). --reference-out PREFIX: last, one batch-2 call on
bench/card.ts's inputs in the timed dtype and in float32 (PREFIX-<dtype>.f32), the reference card.ts --reference
compares ONNX Runtime's output with.

Works with torch 1.13 (Debian, CPU: no float16 kernels, so the export traces float32 and onnx_float16.py converts
the file) and torch 2.x on CUDA (traces the float16 model directly; TorchScript exporter, dynamo as a fallback).
"""
import argparse
import contextlib
import inspect
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import torch  # noqa: E402

import onnx  # noqa: E402
from onnx_float16 import convert_float16, io_summary, rename_io, save_external  # noqa: E402
from sd_unet import HAS_SDPA, SdUnet, count_parameters, diffusers_config, scaled_config, set_fused_attention  # noqa: E402

TOKENS = 77
INPUTS = ['sample', 'timestep', 'encoder_hidden_states']
SDXL_INPUTS = ['text_embeds', 'time_ids']
OUTPUTS = ['out_sample']
OPSET = 17
# The small preset: the same layouts with widths / 10, one resnet per level, one transformer block per attention,
# and the text widths of the project's tiny fixtures (test/fixtures/tiny-sd-files.ts TINY_TEXT: 32, 48, 48).
SMALL = {'width_div': 10, 'max_layers': 1, 'max_depth': 1}
SMALL_TEXT = {'sd15': {'cross_attention_dim': 32}, 'sdxl': {'cross_attention_dim': 80, 'text_embeds_dim': 48}}
SMALL_LATENT = {'sd15': 16, 'sdxl': 32}


def log(msg):
    print(f'[sd_models] {msg}', file=sys.stderr, flush=True)


def make_inputs(cfg, batch, latent, device, dtype, seed=1):
    g = torch.Generator().manual_seed(seed)
    sample = torch.randn(batch, 4, latent, latent, generator=g)
    timestep = torch.full((batch,), 500, dtype=torch.int64)
    hidden = torch.randn(batch, TOKENS, cfg['cross_attention_dim'], generator=g)
    args = [sample.to(device, dtype), timestep.to(device), hidden.to(device, dtype)]
    if cfg['addition_embed_type'] == 'text_time':
        px = float(latent * 8)
        args.append(torch.randn(batch, cfg['text_embeds_dim'], generator=g).to(device, dtype))
        args.append(torch.tensor([[px, px, 0.0, 0.0, px, px]] * batch).to(device, dtype))
    return tuple(args)


def wave(n, k):
    """sin(i * 0.618 + k) for i < n in float64, rounded to float32: bench/card.ts's deterministic inputs."""
    return (torch.sin(torch.arange(n, dtype=torch.float64) * 0.618 + k)).float()


def wave_inputs(cfg, batch, latent, device, dtype):
    """The UNet inputs bench/card.ts feeds (unetFeeds): the same values, so the outputs can be compared."""
    dim = cfg['cross_attention_dim']
    args = [wave(batch * 4 * latent * latent, 1).reshape(batch, 4, latent, latent).to(device, dtype),
            torch.full((batch,), 500, dtype=torch.int64).to(device),
            wave(batch * TOKENS * dim, 2).reshape(batch, TOKENS, dim).to(device, dtype)]
    if cfg['addition_embed_type'] == 'text_time':
        px = float(latent * 8)
        args.append(wave(batch * cfg['text_embeds_dim'], 3).reshape(batch, -1).to(device, dtype))
        args.append(torch.tensor([[px, px, 0.0, 0.0, px, px]] * batch).to(device, dtype))
    return tuple(args)


def write_reference(model, cfg, latent, device, run_dtype, prefix):
    """One batch-2 call on card.ts's inputs, in the timed dtype and in float32 (TF32 off, so the reference is float32
    arithmetic): raw float32 files PREFIX-<dtype>.f32 and PREFIX.json. card.ts compares ONNX Runtime's output with
    them, and PyTorch's float16 output with its float32 one says how far float16 alone moves the call. Leaves the
    model in float32."""
    os.makedirs(os.path.dirname(os.path.abspath(prefix)), exist_ok=True)
    meta = {'batch': 2, 'latent': latent, 'inputs': 'bench/card.ts unetFeeds (wave)', 'files': {}}
    tf32 = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    outs = {}
    with torch.no_grad():
        for dtype in [run_dtype] + ([torch.float32] if run_dtype != torch.float32 else []):
            model = model.to(dtype)
            torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = dtype != torch.float32
            out = model(*wave_inputs(cfg, 2, latent, device, dtype)).float().cpu().contiguous()
            name = str(dtype).replace('torch.', '')
            outs[name] = out
            with open(f'{prefix}-{name}.f32', 'wb') as f:
                f.write(out.numpy().tobytes())
            meta['files'][name] = {'file': os.path.basename(f'{prefix}-{name}.f32'), 'shape': list(out.shape),
                                   'max_abs': float(out.abs().max()), 'finite': bool(torch.isfinite(out).all())}
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = tf32
    if 'float16' in outs and 'float32' in outs:
        d = (outs['float16'] - outs['float32']).abs()
        meta['torch_float16_vs_float32'] = {'max_abs': float(d.max()), 'mean_abs': float(d.mean())}
    with open(prefix + '.json', 'w') as f:
        json.dump(meta, f, indent=2)
    return meta


def sync(device):
    if device.type == 'cuda':
        torch.cuda.synchronize()


def time_call(model, args, device, warmup, iters):
    with torch.no_grad():
        for _ in range(warmup):
            model(*args)
        sync(device)
        times = []
        for _ in range(iters):
            t0 = time.perf_counter()
            out = model(*args)
            sync(device)
            times.append((time.perf_counter() - t0) * 1000)
    return {'median_ms': statistics.median(times), 'min_ms': min(times), 'max_ms': max(times), 'iters': iters,
            'warmup': warmup, 'finite': bool(torch.isfinite(out).all().item())}


def export_kwargs(sdxl):
    names = INPUTS + (SDXL_INPUTS if sdxl else [])
    axes = {'sample': {0: 'batch', 2: 'height', 3: 'width'}, 'timestep': {0: 'batch'},
            'encoder_hidden_states': {0: 'batch', 1: 'sequence'}, 'out_sample': {0: 'batch', 2: 'height', 3: 'width'}}
    if sdxl:
        axes['text_embeds'] = {0: 'batch'}
        axes['time_ids'] = {0: 'batch'}
    return names, axes


class Unsupported(Exception):
    """This torch cannot export the way asked (main exits with code 3, the JSON saying why)."""


def torch_export(model, args, path, names, axes, exporter='auto'):
    """exporter 'auto': the TorchScript exporter (dynamo=False where torch has the choice), the dynamo one if that
    fails; 'torchscript' or 'dynamo': that one only. Returns which wrote the file."""
    params = inspect.signature(torch.onnx.export).parameters
    kwargs = dict(input_names=names, output_names=OUTPUTS, dynamic_axes=axes, opset_version=OPSET,
                  do_constant_folding=os.environ.get('SD_EXPORT_FOLD', '1') != '0')
    if exporter == 'dynamo':
        if 'dynamo' not in params:
            raise Unsupported(f'torch {torch.__version__} has no dynamo exporter in torch.onnx.export')
        try:
            import onnxscript  # noqa: F401  (the dynamo exporter needs it)
        except ImportError:
            raise Unsupported('the dynamo exporter needs onnxscript, which is not installed') from None
    else:
        if 'dynamo' in params:
            kwargs['dynamo'] = False
        try:
            with torch.no_grad():
                torch.onnx.export(model, args, path, **kwargs)
            return 'torchscript'
        except Exception as err:  # noqa: BLE001 - any failure of the old exporter: try the new one
            if 'dynamo' not in params or exporter == 'torchscript':
                raise
            log(f'TorchScript exporter failed ({type(err).__name__}: {str(err)[:300]}); trying dynamo=True')
    kwargs.update(dynamo=True, opset_version=18)
    kwargs.pop('do_constant_folding', None)
    if 'external_data' in params:
        kwargs['external_data'] = True
    try:
        with torch.no_grad():
            torch.onnx.export(model, args, path, **kwargs)
        return 'dynamo'
    except Exception as err:  # noqa: BLE001
        # Dynamic height and width can fail dynamo's shape constraints (the UNet needs sides divisible by 8):
        # then only the batch stays dynamic, the sides are the traced latent's.
        log(f'dynamo export with dynamic sides failed ({type(err).__name__}: {str(err)[:300]}); batch-only dynamic axes')
    kwargs['dynamic_axes'] = {name: {0: 'batch'} for name in axes}
    with torch.no_grad():
        torch.onnx.export(model, args, path, **kwargs)
    return 'dynamo-static-sides'


def export_onnx(model, cfg, folder, dtype_name, device, latent, exporter='auto', attention='manual'):
    """Writes folder/unet/model.onnx (+ model.onnx_data, config.json). Returns what the JSON records."""
    sdxl = cfg['addition_embed_type'] == 'text_time'
    names, axes = export_kwargs(sdxl)
    # 'manual': the written-out attention, one Softmax per layer, as SD exports made with torch 1.x hold it;
    # 'sdpa': F.scaled_dot_product_attention (diffusers' processor under torch 2), which the exporter writes out.
    set_fused_attention(model, attention == 'sdpa')
    trace_half = dtype_name == 'float16' and device.type == 'cuda'
    trace_dtype = torch.float16 if trace_half else torch.float32
    trace_model = model if next(model.parameters()).dtype == trace_dtype else model.to(trace_dtype)
    args = make_inputs(cfg, 2, latent, device, trace_dtype)
    unet_dir = os.path.join(folder, 'unet')
    os.makedirs(unet_dir, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix='sd-export-', dir=folder)
    t0 = time.perf_counter()
    try:
        exporter = torch_export(trace_model, args, os.path.join(tmp, 'model.onnx'), names, axes, exporter)
        t_export = time.perf_counter() - t0
        m = onnx.load(os.path.join(tmp, 'model.onnx'))  # also reads per-tensor external files of > 2 GB exports
        rename_io(m, names, OUTPUTS)
        converted = dtype_name == 'float16' and not trace_half
        if converted:
            convert_float16(m)
        target = os.path.join(unet_dir, 'model.onnx')
        save_external(m, target)
        io = io_summary(m)
        softmax = sum(1 for n in m.graph.node if n.op_type == 'Softmax')
        attn2_up = sum(1 for n in m.graph.node if n.op_type == 'Softmax' and is_up_block_attn2(n))
        del m
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    with open(os.path.join(unet_dir, 'config.json'), 'w') as f:
        json.dump(diffusers_config(cfg), f, indent=2)
        f.write('\n')
    sizes = {name: os.path.getsize(os.path.join(unet_dir, name)) for name in os.listdir(unet_dir)}
    expected = names
    got = [i['name'] for i in io['inputs']]
    if got != expected or [o['name'] for o in io['outputs']] != OUTPUTS:
        raise RuntimeError(f'exported IO {got} -> {io["outputs"]} does not match the contract {expected} -> {OUTPUTS}')
    return {'exporter': exporter, 'attention': 'sdpa' if attention == 'sdpa' and HAS_SDPA else 'manual',
            'opset': OPSET if exporter == 'torchscript' else 18, 'traced_latent': latent, 'dtype': dtype_name,
            'traced_in': str(trace_dtype).replace('torch.', ''), 'converted_to_float16_after_export': converted,
            'export_s': t_export, 'total_s': time.perf_counter() - t0, 'files': sizes, 'softmax_nodes': softmax,
            'up_block_attn2_softmax_nodes': attn2_up, **io}


def is_up_block_attn2(node):
    """Whether a node comes from an up-block's cross-attention: by its name (the TorchScript exporter) or by the
    module scope the dynamo exporter records in its metadata."""
    scopes = ''.join(p.value for p in getattr(node, 'metadata_props', []) if p.key == 'pkg.torch.onnx.name_scopes')
    return (node.name.startswith('/up_blocks.') and '/attn2/' in node.name) or ("'up_blocks." in scopes and '.attn2' in scopes)


def build(name, args):
    scale = dict(SMALL) if args.small else {}
    if args.width_div is not None:
        scale['width_div'] = args.width_div
    if args.max_layers is not None:
        scale['max_layers'] = args.max_layers
    if args.max_depth is not None:
        scale['max_depth'] = args.max_depth
    text = dict(SMALL_TEXT[name]) if args.small else {}
    if args.cross_attention_dim is not None:
        text['cross_attention_dim'] = args.cross_attention_dim
    if args.text_embeds_dim is not None and name == 'sdxl':
        text['text_embeds_dim'] = args.text_embeds_dim
    cfg = scaled_config(name, sample_size=(SMALL_LATENT[name] if args.small else None), **scale, **text)
    torch.manual_seed(args.seed)
    # torch >= 2.0: allocate and initialise the weights on the device itself (2.6 G parameters initialise in
    # seconds on the GPU, a minute on the CPU). torch 1.13's torch.device is no context manager.
    ctx = torch.device(args.device) if hasattr(torch.device(args.device), '__enter__') else contextlib.nullcontext()
    with ctx:
        return cfg, SdUnet(cfg)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--model', choices=['sd15', 'sdxl'], required=True)
    p.add_argument('--out-dir', required=True, help='the export goes to OUT_DIR/<model>/unet/')
    p.add_argument('--json', required=True, help='where to write the measurements')
    p.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    p.add_argument('--dtype', choices=['float16', 'float32'], default='float16', help='of the export and of the CUDA timing')
    p.add_argument('--small', action='store_true', help='widths / 10, 1 resnet per level, depth 1, tiny text widths')
    p.add_argument('--width-div', type=float)
    p.add_argument('--max-layers', type=int)
    p.add_argument('--max-depth', type=int)
    p.add_argument('--cross-attention-dim', type=int)
    p.add_argument('--text-embeds-dim', type=int)
    p.add_argument('--latent', type=int, help='latent side for timing (default: the config sample_size)')
    p.add_argument('--warmup', type=int, default=3)
    p.add_argument('--iters', type=int, default=10)
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--no-time', action='store_true')
    p.add_argument('--no-export', action='store_true')
    p.add_argument('--exporter', choices=['auto', 'torchscript', 'dynamo'], default='auto',
                   help="auto: TorchScript, dynamo if that fails; dynamo where this torch lacks it: exit code 3")
    p.add_argument('--reference-out', metavar='PREFIX',
                   help='last: batch-2 outputs on bench/card.ts\'s inputs at the timing latent, in the timed dtype and in float32 '
                        '(PREFIX-<dtype>.f32, PREFIX.json), for card.ts --reference')
    p.add_argument('--export-attention', choices=['manual', 'sdpa'], default='manual',
                   help='the attention as exported: written out (default) or scaled_dot_product_attention (torch >= 2)')
    args = p.parse_args(argv)

    device = torch.device(args.device)
    result = {'model': args.model, 'small': args.small, 'torch': torch.__version__, 'onnx': onnx.__version__,
              'python': platform.python_version(), 'device': str(device), 'sdpa_available': HAS_SDPA}
    if device.type == 'cuda':
        result['gpu'] = torch.cuda.get_device_name(device)
        result['cuda'] = torch.version.cuda
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    t0 = time.perf_counter()
    cfg, model = build(args.model, args)
    # Timing dtype: float16 on CUDA; CPU torch (1.13) has no float16 kernels, so float32 there.
    run_dtype = torch.float16 if (device.type == 'cuda' and args.dtype == 'float16') else torch.float32
    model = model.to(device=device, dtype=run_dtype).eval()
    result.update(config=cfg, parameters=count_parameters(model), build_s=time.perf_counter() - t0)
    # The timing and the export run in separate processes: equal fingerprints say they held the same weights.
    with torch.no_grad():
        result['weights_fingerprint'] = float(sum(p.double().abs().sum().item() for p in model.parameters()))
    latent = args.latent or cfg['sample_size']
    result['latent'] = latent
    log(f'{args.model}: {result["parameters"] / 1e6:.1f} M parameters, built in {result["build_s"]:.1f} s')

    def write():
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, 'w') as f:
            json.dump(result, f, indent=2)
            f.write('\n')

    if not args.no_time:
        set_fused_attention(model, True)
        timing = {'dtype': str(run_dtype).replace('torch.', ''), 'attention': 'sdpa' if HAS_SDPA else 'manual'}
        # Batch 4: two patches' CFG pairs in one call (what pairing stage-1 patches on a device would cost).
        for batch in (2, 1, 4):
            timing[f'batch{batch}'] = time_call(model, make_inputs(cfg, batch, latent, device, run_dtype), device,
                                                args.warmup, args.iters)
            log(f'{args.model} torch batch {batch}: {timing[f"batch{batch}"]["median_ms"]:.2f} ms (median of {args.iters})')
        timing['batch1_over_batch2'] = timing['batch1']['median_ms'] / timing['batch2']['median_ms']
        timing['batch4_over_batch2'] = timing['batch4']['median_ms'] / timing['batch2']['median_ms']
        result['torch_eager'] = timing
        write()
    if not args.no_export:
        folder = os.path.join(args.out_dir, args.model)
        # Traced at the timing latent on the GPU (a static-sides fallback export then fits the timing and the
        # generation's patches); at most 64 on the CPU.
        try:
            result['export'] = export_onnx(model, cfg, folder, args.dtype, device, latent if device.type == 'cuda' else min(latent, 64),
                                           args.exporter, args.export_attention)
        except Unsupported as why:
            result['unsupported'] = str(why)
            write()
            log(f'{args.model}: not exported: {why}')
            sys.exit(3)
        result['export']['folder'] = os.path.abspath(folder)
        log(f'{args.model} exported ({result["export"]["exporter"]}) in {result["export"]["total_s"]:.1f} s: '
            f'{result["export"]["files"]}')
    if args.reference_out:
        # Last: it leaves the model in float32.
        result['reference'] = write_reference(model, cfg, latent, device, run_dtype, args.reference_out)
        log(f'{args.model} reference outputs: {json.dumps(result["reference"])}')
    write()


if __name__ == '__main__':
    main()
