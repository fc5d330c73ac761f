"""Read the weights of an artifact as stored: a ``.tflite`` file's constant tensors (from its
flatbuffer) or a SavedModel's variables (from its checkpoint), without Keras."""

import os


import numpy as np

from tfdeploy.errors import ArtifactError

_DTYPES = {0: np.float32, 1: np.float16, 2: np.int32, 3: np.uint8, 4: np.int64, 7: np.int16,
           9: np.int8, 10: np.float64}
_NAMES = {0: "float32", 1: "float16", 2: "int32", 3: "uint8", 4: "int64", 5: "string", 6: "bool",
          7: "int16", 9: "int8", 10: "float64", 17: "int4"}


def weight_tensors(path, min_size=16):
    """Return the constant tensors stored in a ``.tflite`` file.

    Args:
        path: the ``.tflite`` file.
        min_size: skip constants with fewer elements (shapes, scalars). Defaults to 16.

    Returns:
        A list of dicts ``{"name", "dtype", "shape", "values"}`` (``values`` is a
        numpy array of the stored, possibly quantized, values).
    """
    with open(path, "rb") as f:
        buf = f.read()
    _, model = _parse(path, buf)
    out = []
    for s in range(model.SubgraphsLength()):
        graph = model.Subgraphs(s)
        for t in range(graph.TensorsLength()):
            tensor = graph.Tensors(t)
            buffer = model.Buffers(tensor.Buffer())
            if buffer is None:
                continue
            raw = None
            if buffer.DataLength():
                raw = buffer.DataAsNumpy().tobytes()
            elif buffer.Offset() > 1 and buffer.Size():
                raw = buf[buffer.Offset():buffer.Offset() + buffer.Size()]
            if raw is None or tensor.Type() not in _DTYPES:
                continue
            values = np.frombuffer(raw, dtype=_DTYPES[tensor.Type()])
            shape = tuple(tensor.ShapeAsNumpy()) if tensor.ShapeLength() else (values.size,)
            if values.size < min_size or int(np.prod(shape)) != values.size:
                continue
            out.append({"name": tensor.Name().decode(), "dtype": _NAMES[tensor.Type()],
                        "shape": shape, "values": values.reshape(shape)})
    return out


def saved_model_weight_tensors(path, min_size=16):
    """The variables of a SavedModel (a version directory or a TF Serving base path).

    Read from ``variables/`` with ``tf.train.load_checkpoint``: the values that
    are served, not those of the Keras model the SavedModel came from.

    Returns:
        A list of dicts ``{"name", "dtype", "shape", "values"}``, as `weight_tensors`.
    """
    import tensorflow as tf

    from tfdeploy.runtime.saved_model import saved_model_dir

    prefix = os.path.join(saved_model_dir(path), "variables", "variables")
    try:
        reader = tf.train.load_checkpoint(prefix)
    except (tf.errors.NotFoundError, ValueError) as exc:
        raise ArtifactError(f"SavedModel {path!r} has no readable variables ({exc}).") from exc
    out = []
    for name, dtype in sorted(reader.get_variable_to_dtype_map().items()):
        if not (dtype.is_floating or dtype.is_integer) or name.startswith("_CHECKPOINTABLE"):
            continue
        values = reader.get_tensor(name)
        if values.size < min_size:
            continue
        out.append({"name": name, "dtype": dtype.name, "shape": tuple(values.shape),
                    "values": values})
    return out


def weight_summary(path):
    """Summarise an artifact's stored weights: element counts by dtype and sparsity.

    ``path`` is a ``.tflite`` file (its constant tensors) or a SavedModel (its
    variables). Sparsity counts stored zeros over the multi-dimensional weight
    tensors (kernels); biases are left out, as in `tfdeploy.compress.model_sparsity`.

    Returns:
        ``{"params": int, "dtypes": {dtype: n_elements}, "sparsity": float}``
    """
    tensors = saved_model_weight_tensors(path) if os.path.isdir(path) else weight_tensors(path)
    dtypes, zeros, total, params = {}, 0, 0, 0
    for t in tensors:
        n = t["values"].size
        params += n
        dtypes[t["dtype"]] = dtypes.get(t["dtype"], 0) + n
        if len(t["shape"]) >= 2 and t["dtype"] != "int32":
            zeros += int(np.count_nonzero(t["values"] == 0))
            total += n
    return {"params": params, "dtypes": dtypes, "sparsity": zeros / total if total else 0.0}


def _parse(path, buf):
    from tensorflow.lite.python import schema_py_generated as schema

    if len(buf) < 8 or buf[4:8] != b"TFL3":
        raise ArtifactError(f"{path!r} is not a TFLite flatbuffer (missing 'TFL3' identifier).")
    return schema, schema.Model.GetRootAs(buf, 0)


def operators(path):
    """The operators of a ``.tflite`` file, read from its flatbuffer, in graph order.

    Returns:
        A list of dicts ``{"op": "CONV_2D", "inputs": [dtype, ...], "outputs": [dtype, ...],
        "name": first output tensor's name, "input_ids": [tensor index, ...], "output_ids":
        [...], "constant": [bool per input: stored in the file]}`` (dtype names as in
        `weight_tensors`; an optional input left out is ``None``, index -1).
    """
    with open(path, "rb") as f:
        schema, model = _parse(path, f.read())
    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    out = []
    for s in range(model.SubgraphsLength()):
        graph = model.Subgraphs(s)

        def dtype(i):
            return None if i < 0 else _NAMES.get(graph.Tensors(i).Type(), str(
                graph.Tensors(i).Type()))

        def constant(i):
            buffer = model.Buffers(graph.Tensors(i).Buffer())
            return buffer is not None and bool(buffer.DataLength() or buffer.Size())

        for o in range(graph.OperatorsLength()):
            op = graph.Operators(o)
            code = model.OperatorCodes(op.OpcodeIndex())
            builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
            name = names.get(builtin, str(builtin))
            if name == "CUSTOM":
                name = code.CustomCode().decode()
            ins = [int(i) for i in op.InputsAsNumpy()] if op.InputsLength() else []
            outs = [int(i) for i in op.OutputsAsNumpy()] if op.OutputsLength() else []
            out.append({"op": name, "inputs": [dtype(i) for i in ins],
                        "outputs": [dtype(i) for i in outs],
                        "name": graph.Tensors(outs[0]).Name().decode() if outs else "",
                        "input_ids": ins, "output_ids": outs,
                        "constant": [i >= 0 and constant(i) for i in ins]})
    return out


def op_dtypes(path):
    """``{op name: set of the dtypes its operators compute in}`` (the first input's dtype)."""
    found = {}
    for op in operators(path):
        found.setdefault(op["op"], set()).add(op["inputs"][0] if op["inputs"] else None)
    return found
