"""ONNX file helpers for the SD-sized exports: float32 -> float16 storage and arithmetic (for torch builds that
cannot run float16 on the CPU, so cannot trace a float16 model there), IO renaming, and saving with all weights
in one external-data file.

The float16 pass turns every float tensor of the graph into float16: initializers, Constant values, Cast targets,
ConstantOfShape fills and the graph's inputs and outputs. Inputs that ONNX requires in float32 stay float32
(Resize's roi and scales). On the card the export traces the float16 model directly and this pass is not used.
"""
import os

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper

# (op type, input index) that must stay float32 whatever the model's float type.
FLOAT32_INPUTS = {('Resize', 1), ('Resize', 2), ('Upsample', 1)}


def _to_f16(tensor):
    arr = numpy_helper.to_array(tensor).astype(np.float16)
    out = numpy_helper.from_array(arr, tensor.name)
    return out


def convert_float16(model):
    g = model.graph
    keep32 = set()
    for node in g.node:
        for i, name in enumerate(node.input):
            if (node.op_type, i) in FLOAT32_INPUTS and name:
                keep32.add(name)
    for idx, init in enumerate(g.initializer):
        if init.data_type == TensorProto.FLOAT and init.name not in keep32:
            g.initializer[idx].CopyFrom(_to_f16(init))
    for node in g.node:
        if node.op_type == 'Constant' and node.output[0] not in keep32:
            for attr in node.attribute:
                if attr.name == 'value' and attr.t.data_type == TensorProto.FLOAT:
                    attr.t.CopyFrom(_to_f16(attr.t))
        elif node.op_type == 'Cast':
            for attr in node.attribute:
                if attr.name == 'to' and attr.i == TensorProto.FLOAT and node.output[0] not in keep32:
                    attr.i = TensorProto.FLOAT16
        elif node.op_type == 'ConstantOfShape':
            for attr in node.attribute:
                if attr.name == 'value' and attr.t.data_type == TensorProto.FLOAT:
                    attr.t.CopyFrom(_to_f16(attr.t))
    for vi in list(g.input) + list(g.output):
        if vi.type.tensor_type.elem_type == TensorProto.FLOAT:
            vi.type.tensor_type.elem_type = TensorProto.FLOAT16
    del g.value_info[:]
    return model


def rename_io(model, inputs, outputs):
    """Gives the graph's inputs and outputs the contract's names, in order (some exporters choose their own)."""
    g = model.graph
    mapping = {}
    real_inputs = [i for i in g.input if i.name not in {t.name for t in g.initializer}]
    for vi, name in zip(real_inputs, inputs):
        if vi.name != name:
            mapping[vi.name] = name
    for vi, name in zip(g.output, outputs):
        if vi.name != name:
            mapping[vi.name] = name
    if not mapping:
        return model
    for vi in list(g.input) + list(g.output) + list(g.value_info):
        if vi.name in mapping:
            vi.name = mapping[vi.name]
    for node in g.node:
        for i, n in enumerate(node.input):
            if n in mapping:
                node.input[i] = mapping[n]
        for i, n in enumerate(node.output):
            if n in mapping:
                node.output[i] = mapping[n]
    return model


def io_summary(model):
    init = {t.name for t in model.graph.initializer}

    def dims(vi):
        return [d.dim_param if d.dim_param else (d.dim_value if d.HasField('dim_value') else '?')
                for d in vi.type.tensor_type.shape.dim]

    def one(vi):
        return {'name': vi.name, 'type': TensorProto.DataType.Name(vi.type.tensor_type.elem_type).lower(),
                'shape': dims(vi)}

    return {'inputs': [one(v) for v in model.graph.input if v.name not in init],
            'outputs': [one(v) for v in model.graph.output]}


def save_external(model, path, data_name='model.onnx_data'):
    """model.onnx + one external-data file next to it (what big optimum exports look like)."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    data_path = os.path.join(folder, data_name)
    if os.path.exists(data_path):
        os.remove(data_path)
    onnx.save_model(model, path, save_as_external_data=True, all_tensors_to_one_file=True, location=data_name,
                    size_threshold=1024)
