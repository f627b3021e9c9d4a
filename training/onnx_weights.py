"""The torch modules of models.py with the weights read back from a shipped ONNX folder (models/shapes-128).

    from onnx_weights import load_onnx_models
    config, text, unet = load_onnx_models('models/shapes-128')

The export (export.py, torch.onnx with constant folding) keeps some parameters under their module names and
renames or reshapes the others, so the mapping is worked out from the graph, not from initializer names: every
initializer is assigned to the module named by the scope of the node that reads it (node
'/up_blocks.1/resnets.0/norm1/Mul' -> module 'up_blocks.1.resnets.0.norm1') and to a parameter by the node's
operator and input slot:

  Conv (1, 2)                   weight, bias
  Gemm (1, 2)                   weight (transB = 1), bias                       time_embedding, time_emb_proj
  MatMul (1)                    weight transposed ('onnx::MatMul_N')             nn.Linear on 3-D inputs
  Add (either slot) after MatMul the Linear's bias
  Mul (1) / Add (1) of a norm   GroupNorm weight / bias as [C, 1, 1] ('onnx::Mul_N', 'onnx::Add_N'): the export
                                writes GroupNorm as InstanceNormalization with unit scale, then Mul and Add
  LayerNormalization (1, 2)     weight, bias
  Gather (0)                    token_embedding.weight
  Add (1) at the text root      position embeddings added to the token embeddings, [1, 77, width]: constant-folded
                                position_embedding(position_ids)[None] with position_ids = arange(77), i.e. the
                                position_embedding weight itself

Equal initializers may be shared through Identity nodes (the exporter deduplicates them); those are read through.
Every torch parameter must receive exactly one initializer with the right shape (load_state_dict strict), every
initializer must be used, and an initializer that kept a parameter name must land on that name. Only the text
encoder and the UNet are loaded (the references compare latents, not images).
"""
import json
import os

import numpy as np
import onnx
import torch
from onnx import numpy_helper

from models import TextEncoder, UNet2DConditionModel


def _read_json(path):
    with open(path) as f:
        return json.load(f)


def config_from_folder(model_dir):
    """The text/unet part of models.py's config, from the folder's config.json files."""
    t = _read_json(os.path.join(model_dir, 'text_encoder', 'config.json'))
    u = _read_json(os.path.join(model_dir, 'unet', 'config.json'))
    return {
        'text': {'width': t['hidden_size'], 'layers': t['num_hidden_layers'], 'heads': t['num_attention_heads'],
                 'max_length': t['max_position_embeddings'], 'vocab_size': t['vocab_size'],
                 'eos_id': t['eos_token_id']},
        'unet': {'block_out_channels': u['block_out_channels'], 'layers_per_block': u['layers_per_block'],
                 'heads': u['attention_head_dim'], 'groups': u['norm_num_groups'], 'ff_mult': u['ff_mult'],
                 'in_channels': u['in_channels'], 'out_channels': u['out_channels'],
                 'sample_size': u['sample_size']},
    }


def _scope(node_name):
    """'/a.0/b/c/Op' -> 'a.0.b.c' (module path); '/Op' -> ''."""
    parts = node_name.strip('/').split('/')[:-1]
    return '.'.join(parts)


def onnx_state_dict(path):
    """{torch parameter name: tensor} recovered from an ONNX file exported from models.py."""
    model = onnx.load(path)
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    producers = {out: n for n in model.graph.node for out in n.output}
    # The exporter shares equal initializers between parameters through Identity nodes (e.g. freshly initialised
    # LayerNorm weights): read through them.
    alias = {n.output[0]: n.input[0] for n in model.graph.node if n.op_type == 'Identity' and n.input[0] in inits}
    for out, src in alias.items():
        inits[out] = inits[src]
    state = {}
    used = set()

    def put(name, array, source):
        if name in state:
            raise ValueError(f'{path}: {name} assigned twice (second from {source})')
        state[name] = torch.from_numpy(np.array(array, dtype=np.float32, copy=True))
        used.add(alias.get(source, source))

    for node in model.graph.node:
        if node.op_type == 'Identity' and node.output[0] in alias:
            continue
        scope = _scope(node.name)
        for slot, inp in enumerate(node.input):
            if inp not in inits:
                continue
            value = inits[inp]
            op = node.op_type
            if op == 'Conv' and slot in (1, 2):
                put(f'{scope}.{"weight" if slot == 1 else "bias"}', value, inp)
            elif op == 'Gemm' and slot in (1, 2):
                attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
                if attrs.get('transA', 0) != 0 or attrs.get('alpha', 1.0) != 1.0 or attrs.get('beta', 1.0) != 1.0:
                    raise ValueError(f'{path}: unexpected Gemm attributes at {node.name}: {attrs}')
                w = value if slot == 2 or attrs.get('transB', 0) == 1 else value.T
                put(f'{scope}.{"weight" if slot == 1 else "bias"}', w, inp)
            elif op == 'MatMul' and slot == 1:
                put(f'{scope}.weight', value.T, inp)
            elif op == 'LayerNormalization' and slot in (1, 2):
                put(f'{scope}.{"weight" if slot == 1 else "bias"}', value, inp)
            elif op == 'Gather' and slot == 0:
                put(f'{scope}.weight', value, inp)
            elif op == 'Mul' and slot == 1 and value.ndim == 3 and value.shape[1:] == (1, 1):
                put(f'{scope}.weight', value.reshape(-1), inp)  # GroupNorm scale
            elif op == 'Add':
                other = node.input[1 - slot]
                prev = producers.get(other)
                if prev is not None and prev.op_type == 'MatMul' and _scope(prev.name) == scope:
                    put(f'{scope}.bias', value, inp)  # nn.Linear bias after its MatMul
                elif prev is not None and prev.op_type == 'Mul' and value.ndim == 3 and value.shape[1:] == (1, 1):
                    put(f'{scope}.bias', value.reshape(-1), inp)  # GroupNorm shift
                elif scope == '' and value.ndim == 3 and value.shape[0] == 1:
                    put('position_embedding.weight', value[0], inp)  # folded position_embedding(arange)[None]
                else:
                    raise ValueError(f'{path}: cannot place initializer {inp} read by {node.name}')
            else:
                raise ValueError(f'{path}: cannot place initializer {inp} read by {node.op_type} {node.name}[{slot}]')
    unused = sorted(set(inits) - used - set(alias))
    if unused:
        raise ValueError(f'{path}: initializers not assigned to any parameter: {unused}')
    for name in inits:
        if name not in alias and not name.startswith('onnx::') and name not in state:
            raise ValueError(f'{path}: initializer {name} keeps a parameter name but was mapped elsewhere')
    return state


def load_onnx_models(model_dir):
    """(config, text encoder, unet) in eval mode, float32, weights from model_dir/*/model.onnx."""
    config = config_from_folder(model_dir)
    t, u = config['text'], config['unet']
    text = TextEncoder(t['vocab_size'], t['eos_id'], t['width'], t['layers'], t['heads'], t['max_length'])
    unet = UNet2DConditionModel(u['block_out_channels'], u['layers_per_block'], u['heads'], u['groups'],
                                u['ff_mult'], u['in_channels'], u['out_channels'], t['width'], u['sample_size'])
    for module, component in ((text, 'text_encoder'), (unet, 'unet')):
        state = onnx_state_dict(os.path.join(model_dir, component, 'model.onnx'))
        expected = module.state_dict()
        for name, value in state.items():
            if name in expected and tuple(expected[name].shape) != tuple(value.shape):
                raise ValueError(f'{component}: {name} has shape {tuple(value.shape)}, '
                                 f'the module expects {tuple(expected[name].shape)}')
        module.load_state_dict(state, strict=True)
        module.eval()
    return config, text, unet
