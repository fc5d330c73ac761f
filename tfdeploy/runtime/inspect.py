"""Describe an artifact: signatures, input/output names, shapes and dtypes.

For a SavedModel the text is the SignatureDef listing of
``saved_model_cli show --all`` (read from ``saved_model.pb`` without loading the
graph), so the two agree line for line. For ``.tflite`` it lists the
interpreter's signatures and tensors (with quantization parameters), for
``.onnx`` the graph inputs/outputs, opset and metadata.
"""

import os

import numpy as np

from tfdeploy.errors import ArtifactError


def _read_saved_model(path):
    from tensorflow.core.protobuf import saved_model_pb2

    from tfdeploy.runtime.saved_model import saved_model_dir

    path = saved_model_dir(path)
    proto = saved_model_pb2.SavedModel()
    try:
        with open(os.path.join(path, "saved_model.pb"), "rb") as f:
            proto.ParseFromString(f.read())
    except Exception as exc:  # protobuf's DecodeError and friends
        raise ArtifactError(f"{path!r} holds a corrupt saved_model.pb ({exc}).") from exc
    return path, proto


def _tensor_info(info):
    from tensorflow.core.framework import types_pb2

    dtype = types_pb2.DataType.Name(info.dtype)
    if info.tensor_shape.unknown_rank:
        shape = None
    else:
        shape = [int(d.size) for d in info.tensor_shape.dim]
    return {"dtype": dtype, "shape": shape, "name": info.name}


def _saved_model(path):
    path, proto = _read_saved_model(path)
    graphs = []
    for meta in sorted(proto.meta_graphs, key=lambda m: list(m.meta_info_def.tags)):
        signatures = {}
        for key in sorted(meta.signature_def):
            sig = meta.signature_def[key]
            signatures[key] = {
                "inputs": {k: _tensor_info(v) for k, v in sorted(sig.inputs.items())},
                "outputs": {k: _tensor_info(v) for k, v in sorted(sig.outputs.items())},
                "method_name": sig.method_name,
            }
        graphs.append({"tags": list(meta.meta_info_def.tags), "signatures": signatures})
    extra = os.path.join(path, "assets.extra")
    files = sorted(os.listdir(extra)) if os.path.isdir(extra) else []
    return {"format": "saved_model", "path": path, "meta_graphs": graphs,
            "assets_extra": files}


def _shape_text(shape):
    return "unknown_rank" if shape is None else "(" + ", ".join(str(d) for d in shape) + ")"


def _saved_model_text(info):
    lines = []
    for graph in info["meta_graphs"]:
        lines.append("")
        lines.append(f"MetaGraphDef with tag-set: '{', '.join(graph['tags'])}' contains the "
                     "following SignatureDefs:")
        for key, sig in graph["signatures"].items():
            lines.append("")
            lines.append(f"signature_def['{key}']:")
            lines.append("  The given SavedModel SignatureDef contains the following input(s):")
            for name, t in sig["inputs"].items():
                lines += [f"    inputs['{name}'] tensor_info:", f"        dtype: {t['dtype']}",
                          f"        shape: {_shape_text(t['shape'])}",
                          f"        name: {t['name']}"]
            lines.append("  The given SavedModel SignatureDef contains the following output(s):")
            for name, t in sig["outputs"].items():
                lines += [f"    outputs['{name}'] tensor_info:", f"        dtype: {t['dtype']}",
                          f"        shape: {_shape_text(t['shape'])}",
                          f"        name: {t['name']}"]
            lines.append(f"  Method name is: {sig['method_name']}")
    if info["assets_extra"]:
        lines += ["", f"assets.extra: {', '.join(info['assets_extra'])}"]
    return "\n".join(lines)


def _tflite(path):
    from tfdeploy.runtime.tflite import TFLiteRunner

    runner = TFLiteRunner(path)
    interp = runner._interpreter

    def tensors(details):
        return [{"name": d["name"], "shape": [int(v) for v in d["shape_signature"]],
                 "dtype": np.dtype(d["dtype"]).name,
                 "quantization": {"scale": float(d["quantization"][0]),
                                  "zero_point": int(d["quantization"][1])}}
                for d in details]

    signatures = {}
    for key, sig in interp.get_signature_list().items():
        runnerfn = interp.get_signature_runner(key)
        signatures[key] = {
            "inputs": {k: tensors([v])[0] for k, v in runnerfn.get_input_details().items()},
            "outputs": {k: tensors([v])[0] for k, v in runnerfn.get_output_details().items()},
        }
    return {"format": "tflite", "path": path, "signatures": signatures,
            "inputs": tensors(interp.get_input_details()),
            "outputs": tensors(interp.get_output_details())}


def _onnx(path):
    from tfdeploy.runtime.onnx import ONNXRunner

    runner = ONNXRunner(path)
    opsets = {}
    try:
        import onnx

        model = onnx.load(path, load_external_data=False)
        opsets = {o.domain or "ai.onnx": int(o.version) for o in model.opset_import}
    except ImportError:
        pass
    return {"format": "onnx", "path": path, "opsets": opsets,
            "inputs": [{"name": n, "shape": list(s), "dtype": d} for n, s, d in runner.inputs],
            "outputs": [{"name": n, "shape": list(s), "dtype": d} for n, s, d in runner.outputs],
            "metadata": runner.metadata}


def _tensor_lines(title, items):
    lines = [title]
    for t in items:
        quant = t.get("quantization")
        q = (f"  scale={quant['scale']:.6g} zero_point={quant['zero_point']}"
             if quant and quant["scale"] else "")
        lines.append(f"    {t['name']}: {t['dtype']} {_shape_text(t['shape'])}{q}")
    return lines


def inspect(path):
    """Describe the artifact at ``path`` as a dict (see the module docstring)."""
    from tfdeploy.runtime.formats import detect_format

    fmt = detect_format(path)
    return {"saved_model": _saved_model, "tflite": _tflite, "onnx": _onnx}[fmt](path)


def describe(path):
    """Describe the artifact at ``path`` as text (SavedModel: as ``saved_model_cli``)."""
    info = inspect(path)
    if info["format"] == "saved_model":
        return _saved_model_text(info)
    lines = [f"{info['format']}: {info['path']}"]
    if info["format"] == "tflite":
        for key, sig in info["signatures"].items():
            lines.append(f"signature {key!r}:")
            lines += _tensor_lines("  inputs:", [{**t, "name": f"{k} ({t['name']})"}
                                                 for k, t in sig["inputs"].items()])
            lines += _tensor_lines("  outputs:", [{**t, "name": f"{k} ({t['name']})"}
                                                  for k, t in sig["outputs"].items()])
        lines += _tensor_lines("inputs:", info["inputs"])
        lines += _tensor_lines("outputs:", info["outputs"])
    else:
        lines.append("opsets: " + ", ".join(f"{k} {v}" for k, v in info["opsets"].items()))
        lines += _tensor_lines("inputs:", info["inputs"])
        lines += _tensor_lines("outputs:", info["outputs"])
        if info["metadata"]:
            lines.append("metadata:")
            lines += [f"    {k}: {v}" for k, v in sorted(info["metadata"].items())]
    return "\n".join(lines)
