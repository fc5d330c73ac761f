"""FLOPs per inference, counted the same way for every format.

One definition everywhere: 2 × multiply-accumulates of the convolution and
matrix-multiply ops (Conv2D, depthwise conv, Dense/MatMul, batch matmul) for
one sample. Element-wise ops (bias, activations, pooling) are left out; they
are a rounding error next to the MACs and their count differs between
converters. So a Keras model, its SavedModel, TFLite and ONNX files give the
same number and achieved FLOP/s compare across runtimes.
"""

import os

import numpy as np

from tfdeploy.errors import ArtifactError


def _dims(shape, default=1):
    return [default if d is None or (isinstance(d, int) and d < 0) else int(d) for d in shape]


def _prod(values):
    return int(np.prod(values)) if len(values) else 1


def _tf_graph_flops(concrete_fn):
    from tensorflow.python.framework.convert_to_constants import (
        convert_variables_to_constants_v2)

    frozen = convert_variables_to_constants_v2(concrete_fn)
    total = 0
    for op in frozen.graph.get_operations():
        if op.type not in ("Conv2D", "DepthwiseConv2dNative", "MatMul", "BatchMatMulV2",
                           "BatchMatMulV3"):
            continue
        out = op.outputs[0].shape
        if out.rank is None:
            continue
        out = _dims(out.as_list())
        if op.type == "Conv2D":
            kh, kw, cin, _ = _dims(op.inputs[1].shape.as_list())
            total += 2 * _prod(out[1:]) * kh * kw * cin
        elif op.type == "DepthwiseConv2dNative":
            kh, kw, _, _ = _dims(op.inputs[1].shape.as_list())
            total += 2 * _prod(out[1:]) * kh * kw
        elif op.type == "MatMul":
            a = _dims(op.inputs[0].shape.as_list())
            k = a[0] if op.get_attr("transpose_a") else a[1]
            total += 2 * _prod(out[1:]) * k  # per sample: one row of the batch
        else:
            a = _dims(op.inputs[0].shape.as_list())
            k = a[-2] if op.get_attr("adj_x") else a[-1]
            total += 2 * _prod(out[1:]) * k
    return total


def keras_flops(model):
    """FLOPs per sample of a Keras model (traced at batch size 1)."""
    import tensorflow as tf

    specs = [tf.TensorSpec([1, *t.shape[1:]], t.dtype) for t in model.inputs]
    fn = tf.function(lambda *xs: model(list(xs) if len(xs) > 1 else xs[0], training=False))
    return _tf_graph_flops(fn.get_concrete_function(*specs))


def saved_model_flops(path, signature="serving_default"):
    """FLOPs per sample of a SavedModel signature."""
    from tfdeploy.runtime.saved_model import SavedModelRunner

    runner = SavedModelRunner(path, signature=signature)
    return _tf_graph_flops(runner._fn)


# TFLite builtin operator codes (tensorflow/lite/schema/schema.fbs).
_CONV_2D, _DEPTHWISE_CONV_2D, _FULLY_CONNECTED, _BATCH_MATMUL = 3, 4, 9, 126


def tflite_flops(path):
    """FLOPs per sample of a ``.tflite`` file, read from its flatbuffer."""
    from tensorflow.lite.python import schema_py_generated as schema

    with open(path, "rb") as f:
        buf = f.read()
    if len(buf) < 8 or buf[4:8] != b"TFL3":
        raise ArtifactError(f"{path!r} is not a TFLite flatbuffer (missing 'TFL3' identifier).")
    model = schema.Model.GetRootAs(buf, 0)
    total = 0
    for s in range(model.SubgraphsLength()):
        graph = model.Subgraphs(s)

        def shape(i):
            tensor = graph.Tensors(i)
            return _dims(tensor.ShapeAsNumpy().tolist()) if tensor.ShapeLength() else []

        for o in range(graph.OperatorsLength()):
            op = graph.Operators(o)
            code = model.OperatorCodes(op.OpcodeIndex())
            kind = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
            if kind not in (_CONV_2D, _DEPTHWISE_CONV_2D, _FULLY_CONNECTED, _BATCH_MATMUL):
                continue
            out = shape(op.Outputs(0))
            weights = shape(op.Inputs(1))
            if kind == _CONV_2D:
                _, kh, kw, cin = weights
                total += 2 * _prod(out[1:]) * kh * kw * cin
            elif kind == _DEPTHWISE_CONV_2D:
                _, kh, kw, _ = weights
                total += 2 * _prod(out[1:]) * kh * kw
            elif kind == _FULLY_CONNECTED:
                total += 2 * _prod(out[1:]) * weights[-1]  # weights: [units, inputs]
            else:
                a = shape(op.Inputs(0))
                total += 2 * _prod(out[1:]) * a[-1]
    return total


def onnx_flops(path):
    """FLOPs per sample of a ``.onnx`` file (float, Q/DQ or integer-quantized graphs)."""
    import onnx

    model = onnx.shape_inference.infer_shapes(onnx.load(path))
    graph = model.graph
    shapes = {init.name: list(init.dims) for init in graph.initializer}
    for value in list(graph.input) + list(graph.output) + list(graph.value_info):
        dims = value.type.tensor_type.shape.dim
        shapes[value.name] = [d.dim_value if d.HasField("dim_value") else 1 for d in dims]
    weight_input = {"Conv": 1, "ConvInteger": 1, "QLinearConv": 3, "MatMul": 1,
                    "MatMulInteger": 1, "QLinearMatMul": 3, "Gemm": 1}
    total = 0
    for node in graph.node:
        if node.op_type not in weight_input:
            continue
        out = shapes.get(node.output[0])
        w = shapes.get(node.input[weight_input[node.op_type]])
        if not out or not w:
            continue
        if node.op_type in ("Conv", "ConvInteger", "QLinearConv"):
            total += 2 * _prod(out[1:]) * _prod(w[1:])  # W: [Cout, Cin/groups, kh, kw]
        elif node.op_type == "Gemm":
            trans_b = next((a.i for a in node.attribute if a.name == "transB"), 0)
            k = w[1] if trans_b else w[0]
            total += 2 * _prod(out[1:]) * k
        else:
            total += 2 * _prod(out[1:]) * w[-2]
    return total


def flops(target):
    """FLOPs per sample of a Keras model, runtime runner, or artifact path."""
    if hasattr(target, "inputs") and hasattr(target, "layers"):
        return keras_flops(target)
    path = getattr(target, "path", target)
    if not isinstance(path, (str, os.PathLike)):
        raise ArtifactError(f"Cannot count FLOPs of {type(target).__name__}.")
    from tfdeploy.runtime.formats import detect_format

    fmt = detect_format(path)
    return {"saved_model": saved_model_flops, "tflite": tflite_flops,
            "onnx": onnx_flops}[fmt](path)
