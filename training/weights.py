"""Weights as float32 .npz with the model configuration embedded as a JSON string under '__config__'.
Plain npz keeps checkpoints readable across torch versions (trained on torch 2.x, exported with 1.13)."""
import io
import json
import os

import numpy as np
import torch


def save_weights(path, arrays, config):
    """Atomic write: the file is either the old or the new checkpoint, never half of one."""
    buf = io.BytesIO()
    np.savez(buf, __config__=np.array(json.dumps(config)), **{k: np.asarray(v, dtype=np.float32) for k, v in arrays.items()})
    tmp = path + '.tmp'
    with open(tmp, 'wb') as f:
        f.write(buf.getvalue())
    os.replace(tmp, path)


def load_weights(path):
    """Returns (config dict, {name: float32 ndarray})."""
    with np.load(path, allow_pickle=False) as z:
        config = json.loads(str(z['__config__']))
        arrays = {k: z[k] for k in z.files if k != '__config__'}
    return config, arrays


def load_models(path, device='cpu'):
    """Rebuilds (config, vae, text, unet) in eval mode from a weights file."""
    from models import build_models
    config, arrays = load_weights(path)
    vae, text, unet = build_models(config, config['text']['vocab_size'], config['text']['eos_id'])
    for prefix, module in (('vae', vae), ('text', text), ('unet', unet)):
        state = {k[len(prefix) + 1:]: torch.from_numpy(v) for k, v in arrays.items() if k.startswith(prefix + '.')}
        module.load_state_dict(state, strict=True)
        module.to(device).eval()
    return config, vae, text, unet
