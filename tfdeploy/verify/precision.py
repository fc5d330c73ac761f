"""Which precision each layer of a ``.tflite`` file computes in, read from the file itself.

A TFLite operator's precision follows from the tensors stored in the flatbuffer:
int8 activations are "int8" (int8 weights) or "int4" (int4 weights stored in the
file, unpacked to int8 by the kernel), int16 activations are "int16x8"
(int16 activations, int8 weights), float activations fed by a ``DEQUANTIZE`` of
stored int4 / int8 / float16 weights are "int4w" / "int8w" / "float16"
(weight-only: the weights are stored small, the compute is float), float
activations with stored int8 weights are "dynamic" (hybrid kernels), and the
rest is "float". ``QUANTIZE``/``DEQUANTIZE`` operators are the boundaries
between precisions, not layers.

Operators are keyed by the Keras layer they came from: the converter names an
operator's output after the layers fused into it (``model/bn/FusedBatchNormV3;
model/conv1/BiasAdd;model/conv1/BiasAdd/ReadVariableOp``): without the model name
and the TensorFlow op name, the shortest of those paths, the last one on a tie,
is the key (``conv1``; ``base/block_1_expand`` in a nested model; tfmot's
``quant_`` wrapper prefix dropped, so a QAT model's layers key as its float
model's). An output with no such path keeps its tensor name.
"""

import re
from collections import Counter

from tfdeploy.verify.tflite_weights import operators

BOUNDARIES = ("QUANTIZE", "DEQUANTIZE")
_QAT_PREFIX = re.compile(r"^quant_")  # tfmot's QuantizeWrapper names: quant_<layer>
# the precision a layer with several operators is reported in: more precise first, but a
# weight-only precision (float compute on weights stored small) before the plain float of the
# operators around its weighted one (a RESHAPE or bias ADD beside an int8w FULLY_CONNECTED)
_ORDER = ("float16", "int8w", "int4w", "float", "int16x8", "dynamic", "int8", "int4", "other")


def layer_key(tensor_name):
    """The layer key of an operator whose first output is ``tensor_name`` (see module doc)."""
    paths = [[_QAT_PREFIX.sub("", c) for c in part.split("/")[1:-1]]
             for part in tensor_name.split(";")]
    paths = [p for p in paths if p]
    if not paths:
        return tensor_name
    shortest = min(len(p) for p in paths)
    return "/".join([p for p in paths if len(p) == shortest][-1])


def _precision(op, producers, ops):
    act = op["outputs"][0] if op["outputs"] else None
    if act in ("int8", "uint8"):
        return "int4" if any(const and dtype == "int4" for dtype, const in
                             zip(op["inputs"], op["constant"])) else "int8"
    if act == "int16":
        return "int16x8"
    if act not in ("float32", "float16"):
        return "other"
    for i, (tensor, dtype, const) in enumerate(zip(op["input_ids"], op["inputs"],
                                                   op["constant"])):
        if i == 0 and op["op"] != "EMBEDDING_LOOKUP":
            continue  # the activation input
        if const and dtype == "int8":
            return "dynamic"
        source = producers.get(tensor)
        if source is not None and ops[source]["op"] == "DEQUANTIZE" and ops[source]["constant"][0]:
            stored = ops[source]["inputs"][0]
            return {"int4": "int4w", "int8": "int8w", "float16": "float16"}.get(stored, "float")
    return "float"


def op_precisions(path):
    """Every compute operator of a ``.tflite`` file with its layer key and precision.

    Returns:
        A list of dicts ``{"op", "layer", "precision", "name"}`` in graph order
        (``QUANTIZE``/``DEQUANTIZE`` left out).
    """
    ops = operators(path)
    producers = {t: n for n, op in enumerate(ops) for t in op["output_ids"]}
    return [{"op": op["op"], "layer": layer_key(op["name"]), "name": op["name"],
             "precision": _precision(op, producers, ops)}
            for op in ops if op["op"] not in BOUNDARIES]


def precision_map(path):
    """``{layer key: precision}`` of a ``.tflite`` file, read from the file itself.

    A layer whose operators compute in several precisions is reported in the
    most precise of them (a float ``MUL`` beside an int8 ``CONV_2D`` makes it
    "float"), except that a weight-only operator ("float16", "int8w", "int4w":
    float compute on weights stored small) names its layer over the float
    operators beside it (a float ``RESHAPE`` after an int8w ``FULLY_CONNECTED``:
    "int8w").
    """
    found = {}
    for op in op_precisions(path):
        old = found.get(op["layer"])
        if old is None or _ORDER.index(op["precision"]) < _ORDER.index(old):
            found[op["layer"]] = op["precision"]
    return found


def precision_counts(path):
    """``{precision: number of compute operators}`` of a ``.tflite`` file."""
    return dict(Counter(op["precision"] for op in op_precisions(path)))


__all__ = ["precision_map", "precision_counts", "op_precisions", "layer_key"]
