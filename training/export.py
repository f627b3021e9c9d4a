"""Exports trained weights to the optimum ONNX folder layout (opset 17) and saves torch reference outputs.

    python3 training/export.py --weights runs/X/model.npz --out models/shapes-128

Writes model_index.json, scheduler/, tokenizer/, text_encoder/, unet/, vae_encoder/, vae_decoder/ under
--out (README.md there is left alone), then torch inputs/outputs as .npy plus manifest.json under
--check-dir for check-export.mjs (onnxruntime-node must reproduce them within 1e-4).
The modules are exported directly (no wrapper), so node names start at the model root, e.g.
/up_blocks.1/attentions.0/transformer_blocks.0/attn2/Softmax. vae_encoder returns diffusers' latent
parameters ([mean, logvar] on channels, unscaled); vae_decoder takes latents already divided by
scaling_factor.
"""
import argparse
import inspect
import json
import os
import shutil
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import numpy as np  # noqa: E402
import torch  # noqa: E402

import data  # noqa: E402
from tokenizer import ClipTokenizer  # noqa: E402
from weights import load_models  # noqa: E402

TOKENIZER_DIR = os.path.join(HERE, 'tokenizer')
TOKENIZER_FILES = ('vocab.json', 'merges.txt', 'special_tokens_map.json', 'tokenizer_config.json')
OPSET = 17
# Node names the ASGD mask reads (up-block cross-attention probabilities); the export must contain them.
REQUIRED_NODES = ('/up_blocks.1/attentions.0/transformer_blocks.0/attn2/Softmax',
                  '/up_blocks.0/attentions.0/transformer_blocks.0/attn2/Softmax')


def onnx_export(module, args, path, input_names, output_names, dynamic_axes):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    kwargs = dict(input_names=input_names, output_names=output_names, dynamic_axes=dynamic_axes,
                  opset_version=OPSET, do_constant_folding=True)
    if 'dynamo' in inspect.signature(torch.onnx.export).parameters:
        kwargs['dynamo'] = False  # torch >= 2.5 would otherwise pick the dynamo exporter (needs onnxscript)
    with torch.no_grad():
        torch.onnx.export(module, args, path, **kwargs)


def write_json(path, obj):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, 'w') as f:
        json.dump(obj, f, indent=2)
        f.write('\n')


def write_configs(out, config, tok, tokenizer_dir=TOKENIZER_DIR):
    t, u, v = config['text'], config['unet'], config['vae']
    levels = len(u['block_out_channels'])
    write_json(os.path.join(out, 'model_index.json'), {
        '_class_name': 'ORTStableDiffusionPipeline',
        '_diffusers_version': '0.29.0',
        'feature_extractor': [None, None],
        'requires_safety_checker': False,
        'safety_checker': [None, None],
        'scheduler': ['diffusers', 'PNDMScheduler'],
        'text_encoder': ['optimum', 'ORTModelTextEncoder'],
        'tokenizer': ['transformers', 'CLIPTokenizer'],
        'unet': ['optimum', 'ORTModelUnet'],
        'vae_decoder': ['optimum', 'ORTModelVaeDecoder'],
        'vae_encoder': ['optimum', 'ORTModelVaeEncoder'],
    })
    write_json(os.path.join(out, 'scheduler', 'scheduler_config.json'), {
        '_class_name': 'PNDMScheduler',
        '_diffusers_version': '0.29.0',
        'beta_end': 0.012,
        'beta_schedule': 'scaled_linear',
        'beta_start': 0.00085,
        'clip_sample': False,
        'num_train_timesteps': 1000,
        'prediction_type': 'epsilon',
        'set_alpha_to_one': False,
        'skip_prk_steps': True,
        'steps_offset': 1,
        'timestep_spacing': 'leading',
        'trained_betas': None,
    })
    write_json(os.path.join(out, 'text_encoder', 'config.json'), {
        'architectures': ['CLIPTextModel'],
        'model_type': 'clip_text_model',
        'hidden_size': t['width'],
        'intermediate_size': 4 * t['width'],
        'num_hidden_layers': t['layers'],
        'num_attention_heads': t['heads'],
        'max_position_embeddings': t['max_length'],
        'vocab_size': tok.vocab_size,
        'hidden_act': 'quick_gelu',
        'layer_norm_eps': 1e-5,
        'bos_token_id': tok.bos,
        'eos_token_id': tok.eos,
        'pad_token_id': tok.eos,
    })
    write_json(os.path.join(out, 'unet', 'config.json'), {
        '_class_name': 'UNet2DConditionModel',
        '_diffusers_version': '0.29.0',
        'act_fn': 'silu',
        'attention_head_dim': u['heads'],  # as in SD 1.x configs, this is the number of heads
        'block_out_channels': u['block_out_channels'],
        'center_input_sample': False,
        'cross_attention_dim': t['width'],
        'down_block_types': ['CrossAttnDownBlock2D'] * levels,
        'downsample_padding': 1,
        'flip_sin_to_cos': True,
        'freq_shift': 0,
        'in_channels': u['in_channels'],
        'layers_per_block': u['layers_per_block'],
        'mid_block_type': 'UNetMidBlock2DCrossAttn',
        'norm_eps': 1e-5,
        'norm_num_groups': u['groups'],
        'out_channels': u['out_channels'],
        'sample_size': u['sample_size'],
        'up_block_types': ['CrossAttnUpBlock2D'] * levels,
        'use_linear_projection': False,
        'ff_mult': u['ff_mult'],
        'latent_size_multiple': 2 ** (levels - 1),
    })
    vae_config = {
        '_class_name': 'AutoencoderKL',
        '_diffusers_version': '0.29.0',
        'in_channels': 3,
        'out_channels': 3,
        'latent_channels': v['latent_channels'],
        'block_out_channels': v['channels'],
        'sample_size': data.SIZE,
        'scaling_factor': config['scaling_factor'],
        'force_upcast': False,
    }
    write_json(os.path.join(out, 'vae_decoder', 'config.json'), vae_config)
    write_json(os.path.join(out, 'vae_encoder', 'config.json'), vae_config)
    os.makedirs(os.path.join(out, 'tokenizer'), exist_ok=True)
    for name in TOKENIZER_FILES:
        shutil.copyfile(os.path.join(tokenizer_dir, name), os.path.join(out, 'tokenizer', name))


def check_node_names(path):
    import onnx
    names = {n.name for n in onnx.load(path).graph.node}
    missing = [n for n in REQUIRED_NODES if n not in names]
    if missing:
        raise SystemExit(f'{path}: missing nodes {missing}; softmax nodes present: '
                         f'{sorted(n for n in names if n.endswith("Softmax"))}')
    return sorted(n for n in names if n.endswith('/attn2/Softmax'))


class References:
    """Collects torch inputs/outputs as .npy files and a manifest for check-export.mjs."""

    def __init__(self, directory, model_dir):
        self.dir = directory
        os.makedirs(directory, exist_ok=True)
        self.manifest = {'model_dir': os.path.abspath(model_dir), 'tolerance': 1e-4, 'cases': []}

    def add(self, name, model, inputs, outputs):
        case = {'name': name, 'model': model, 'inputs': {}, 'outputs': {}}
        for kind, tensors in (('inputs', inputs), ('outputs', outputs)):
            for key, value in tensors.items():
                file = f'{name}.{kind}.{key}.npy'
                np.save(os.path.join(self.dir, file), value.detach().cpu().numpy())
                case[kind][key] = file
        self.manifest['cases'].append(case)

    def write(self):
        write_json(os.path.join(self.dir, 'manifest.json'), self.manifest)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--weights', required=True)
    p.add_argument('--out', required=True)
    p.add_argument('--check-dir', default=os.path.join(HERE, 'runs', 'export-check'))
    p.add_argument('--tokenizer', default=TOKENIZER_DIR,
                   help='tokenizer folder of the weights (train.py --data scenes writes OUT/tokenizer)')
    a = p.parse_args(argv)
    torch.set_num_threads(2)
    config, vae, text, unet = load_models(a.weights)
    tok = ClipTokenizer(a.tokenizer)
    if tok.vocab_size != config['text']['vocab_size']:
        raise SystemExit(f'tokenizer has {tok.vocab_size} tokens but the weights expect {config["text"]["vocab_size"]}')
    out = a.out
    write_configs(out, config, tok, a.tokenizer)
    extra = os.path.join(os.path.dirname(os.path.abspath(a.weights)), 'hparams.json')
    if os.path.exists(extra):
        shutil.copyfile(extra, os.path.join(out, 'training_hparams.json'))

    width = config['text']['width']
    torch.manual_seed(0)
    ids = torch.tensor([tok(c) for c in ('a red circle on a blue background', '',
                                         'a white triangle on a purple background')], dtype=torch.int32)
    sample = torch.randn(2, 4, 16, 16)
    timestep = torch.tensor([999, 1], dtype=torch.int64)
    ctx = torch.randn(2, 77, width)

    paths = {k: os.path.join(out, k, 'model.onnx') for k in ('text_encoder', 'unet', 'vae_encoder', 'vae_decoder')}
    onnx_export(text, (ids,), paths['text_encoder'], ['input_ids'],
                ['last_hidden_state', 'pooler_output'],
                {'input_ids': {0: 'batch'}, 'last_hidden_state': {0: 'batch'}, 'pooler_output': {0: 'batch'}})
    onnx_export(unet, (sample, timestep, ctx), paths['unet'],
                ['sample', 'timestep', 'encoder_hidden_states'], ['out_sample'],
                {'sample': {0: 'batch', 2: 'height', 3: 'width'}, 'timestep': {0: 'batch'},
                 'encoder_hidden_states': {0: 'batch', 1: 'sequence'},
                 'out_sample': {0: 'batch', 2: 'height', 3: 'width'}})
    image = data.render(torch.tensor([0, 2]), torch.tensor([0, 4]), torch.tensor([2, 8]), torch.Generator().manual_seed(0))
    onnx_export(vae.encoder, (image,), paths['vae_encoder'], ['sample'], ['latent_parameters'],
                {'sample': {0: 'batch', 2: 'height', 3: 'width'},
                 'latent_parameters': {0: 'batch', 2: 'latent_height', 3: 'latent_width'}})
    latents = torch.randn(2, 4, 16, 16) / config['scaling_factor']
    onnx_export(vae.decoder, (latents,), paths['vae_decoder'], ['latent_sample'], ['sample'],
                {'latent_sample': {0: 'batch', 2: 'latent_height', 3: 'latent_width'},
                 'sample': {0: 'batch', 2: 'height', 3: 'width'}})
    softmax = check_node_names(paths['unet'])

    # References, also at shapes other than the traced ones, to prove the dynamic axes work.
    refs = References(a.check_dir, out)
    with torch.no_grad():
        h, pooled = text(ids)
        refs.add('text', 'text_encoder', {'input_ids': ids}, {'last_hidden_state': h, 'pooler_output': pooled})
        refs.add('unet_native', 'unet', {'sample': sample, 'timestep': timestep, 'encoder_hidden_states': h[:2]},
                 {'out_sample': unet(sample, timestep, h[:2])})
        big = torch.randn(3, 4, 24, 40)
        t3 = torch.tensor([500, 250, 10], dtype=torch.int64)
        refs.add('unet_large', 'unet', {'sample': big, 'timestep': t3, 'encoder_hidden_states': h},
                 {'out_sample': unet(big, t3, h)})
        refs.add('vae_encoder', 'vae_encoder', {'sample': image}, {'latent_parameters': vae.encoder(image)})
        wide = data.render(torch.tensor([1]), torch.tensor([1]), torch.tensor([3]), torch.Generator().manual_seed(1),
                           size=128)[:, :, :, :]
        wide = torch.cat([wide, wide.flip(-1)], dim=-1)  # 128 x 256
        refs.add('vae_encoder_wide', 'vae_encoder', {'sample': wide}, {'latent_parameters': vae.encoder(wide)})
        refs.add('vae_decoder', 'vae_decoder', {'latent_sample': latents}, {'sample': vae.decoder(latents)})
        lat2 = torch.randn(1, 4, 24, 8) / config['scaling_factor']
        refs.add('vae_decoder_tall', 'vae_decoder', {'latent_sample': lat2}, {'sample': vae.decoder(lat2)})
    refs.write()
    sizes = {k: os.path.getsize(p) for k, p in paths.items()}
    print(json.dumps({'out': out, 'bytes': sizes, 'total_mb': round(sum(sizes.values()) / 1e6, 2),
                      'scaling_factor': config['scaling_factor'], 'attn2_softmax_nodes': softmax,
                      'check_dir': a.check_dir}, indent=1))


if __name__ == '__main__':
    main()
