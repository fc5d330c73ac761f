"""TF Serving's JSON mapping: request bodies to numpy/tf.Example, results to JSON.

Row format (``instances``) and columnar format (``inputs``), named and unnamed
inputs, ``{"b64": ...}`` for binary strings, ``predictions``/``outputs``
responses, and ``examples`` + ``context`` for classify and regress.
"""

import base64
import binascii
import functools
import itertools
import json

import numpy as np
import orjson

from tfdeploy.serving.inference import check_dtype_supported
from tfdeploy.serving.json_fast import FastArray, holds_fast_arrays, load_all
from tfdeploy.serving.status import invalid

_B64 = "b64"


def _is_b64(value):
    return isinstance(value, dict) and len(value) == 1 and _B64 in value


def _decode_b64(value):
    data = value[_B64]
    if not isinstance(data, str):
        raise invalid(f"JSON Value: {value} not formatted correctly for base64 data")
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise invalid(f"Unable to base64 decode {data[:40]!r}: {exc}") from exc


@functools.lru_cache(maxsize=None)
def supported_dtypes():
    import tensorflow as tf

    return {tf.bool, tf.string, tf.int8, tf.uint8, tf.int16, tf.uint16, tf.int32, tf.uint32,
            tf.int64, tf.uint64, tf.float16, tf.float32, tf.float64}


# -- requests -----------------------------------------------------------------------------
def _strings(value, name):
    if isinstance(value, list):
        return [_strings(v, name) for v in value]
    if isinstance(value, str):
        return value.encode("utf-8")
    if _is_b64(value):
        return _decode_b64(value)
    raise invalid(f"JSON Value: {debug_string(value)} Type: {json_type(value)} is not of "
                  "expected type: string")


def debug_string(value, limit=256):
    """A JSON value as TF Serving quotes it in an error: compact, cut at ``limit`` chars."""
    if isinstance(value, FastArray):
        return value.raw[:limit].decode("latin-1")
    out, size = [], 0
    try:
        encoder = json.JSONEncoder(default=lambda v: v.raw[:limit].decode("latin-1")
                                   if isinstance(v, FastArray) else str(v))
        for chunk in encoder.iterencode(value):
            out.append(chunk)
            size += len(chunk)
            if size >= limit:
                break
    except (ValueError, RecursionError):
        pass
    return "".join(out)[:limit]


def json_type(value):
    """rapidjson's type name of a decoded JSON value (TF Serving's JsonTypeString)."""
    if value is None or isinstance(value, bool):
        return {None: "Null", True: "True", False: "False"}[value]
    if isinstance(value, (int, float)):
        return "Number"
    return {dict: "Object", list: "Array", str: "String"}.get(type(value), "Number")


def _tf_dtype(np_dtype):
    import tensorflow as tf

    try:
        return tf.dtypes.as_dtype(np_dtype)
    except TypeError:
        return tf.string


def _data_type_string(dtype):
    return {"float32": "float", "float64": "double", "float16": "half"}.get(dtype.name, dtype.name)


def _type_error(value, dtype):
    """TF Serving's TypeError for the first JSON value that ``dtype`` cannot hold, or None."""
    target = np.dtype(dtype.as_numpy_dtype)
    if target.kind in "iu":
        info = np.iinfo(target)

        def fits(v):
            return type(v) is int and info.min <= v <= info.max
    elif target.kind == "b":
        def fits(v):
            return isinstance(v, bool)
    else:
        def fits(v):
            return isinstance(v, (int, float)) and not isinstance(v, bool)
    stack = [value]
    while stack:
        v = stack.pop()
        if isinstance(v, list):
            stack.extend(reversed(v))
        elif not fits(v):
            return invalid(f"JSON Value: {debug_string(v)} Type: {json_type(v)} is not of "
                           f"expected type: {_data_type_string(dtype)}")
    return None


def to_ndarray(value, dtype, name, plain=False, check_shape=None):
    """Convert a JSON value to an ndarray of ``dtype`` (a tf.DType), strictly typed.

    ``plain``: the value is known to hold no FastArray (skips a walk over every element).
    ``check_shape(name, shape)``: called before a large numeric array is decoded, so a
    tensor of the wrong shape is refused before it is materialised.
    """
    try:
        return _to_ndarray(value, dtype, name, plain, check_shape)
    except RecursionError:
        raise invalid(f"Input '{name}' is nested too deeply.") from None


def _to_ndarray(value, dtype, name, plain=False, check_shape=None):
    import tensorflow as tf

    check_dtype_supported(name, dtype, supported_dtypes())
    fast = _fast_array(value, dtype, None if check_shape is None
                       else functools.partial(check_shape, name))
    if fast is not None:
        return fast
    if not plain:
        value = load_all(value)
    if dtype == tf.string:
        nested = _strings(value, name)
        try:
            shaped = np.array(nested, dtype=object)
        except ValueError as exc:
            raise invalid(f"Input '{name}': all values must have the same shape: {exc}") from exc
        if not all(isinstance(v, bytes) for v in shaped.flat):
            raise invalid(f"Input '{name}': all values must have the same shape (the nested "
                          "lists are ragged).")
        return shaped
    try:
        array = _rectangular(value)
        if array is None:
            array = np.array(value)
    except (ValueError, TypeError, OverflowError) as exc:
        raise invalid(f"Input '{name}': all values must have the same shape and be numbers "
                      f"or booleans: {exc}") from exc
    kind, target = array.dtype.kind, np.dtype(dtype.as_numpy_dtype)
    if array.size == 0:
        return array.astype(target)
    ok = {"b": "b", "i": "iu", "u": "iu", "f": "iuf"}[target.kind]
    if kind not in ok:
        error = _type_error(value, dtype)
        if error is not None:
            raise error
        expected = {"b": "bool", "i": "integer", "u": "integer", "f": "number"}[target.kind]
        raise invalid(f"Input '{name}' expects {dtype.name} values ({expected}), received JSON "
                      f"values of type {_kind_name(kind)}.")
    if target.kind in "iu":
        info = np.iinfo(target)
        if array.min() < info.min or array.max() > info.max:
            raise _type_error(value, dtype) or invalid(
                f"Input '{name}': value out of range for {dtype.name}.")
    with np.errstate(over="ignore"):   # past float32's range is +-inf, as in TF Serving
        return array.astype(target)


_LIST = {list}


def _rectangular(value):
    """``np.array(value)`` of nested lists of numbers, flattened level by level first (numpy
    discovers the shape of an image row by row, element by element: a 32x32x1 image's 1,024
    one-element lists take ~5x longer than its 1,024 numbers). None, so that the caller's
    ``np.array`` path decides and words the error, for anything but a rectangular nest of
    lists with no list among its leaves; the array is the one ``np.array`` makes."""
    if type(value) is not list:
        return None
    shape, level = [len(value)], value
    while level and type(level[0]) is list:
        n = len(level[0])
        if set(map(type, level)) != _LIST or set(map(len, level)) != {n}:
            return None
        shape.append(n)
        level = list(itertools.chain.from_iterable(level))
    if not level:      # an empty dimension: leave it to numpy
        return None
    try:
        flat = np.array(level)
    except (ValueError, TypeError, OverflowError):
        return None    # (a list among the leaves, a ragged nest: numpy words it below)
    if flat.ndim != 1:   # a list among the leaves
        return None
    return flat.reshape(shape)


def _fast_array(value, dtype, check_shape=None):
    """The float ndarray of a FastArray (or a list of same-shape ones), or None.
    ``check_shape(shape)`` sees the whole tensor's shape before numbers are decoded."""
    if not dtype.is_floating:
        return None
    target = np.dtype(dtype.as_numpy_dtype)
    if isinstance(value, FastArray):
        return value.array(check_shape, target)
    if isinstance(value, list) and value and all(isinstance(v, FastArray) for v in value):
        row = None if check_shape is None else (
            lambda shape: check_shape((len(value),) + tuple(shape)))
        arrays = [v.array(row, target) for v in value]
        if any(a is None for a in arrays) or len({a.shape for a in arrays}) != 1:
            return None
        return np.stack(arrays)
    return None


def _kind_name(kind):
    return {"b": "bool", "i": "integer", "u": "integer", "f": "number", "U": "string",
            "O": "object/mixed", "S": "bytes"}.get(kind, kind)


def parse_predict(body, input_dtypes, check_shape=None):
    """Return ``(format, {input: ndarray})``; format is "row" or "columnar".

    ``check_shape(name, shape)`` (e.g. ``SignatureValidator.check_shape``) refuses a large
    numeric tensor of the wrong shape before it is decoded.
    """
    if "instances" in body and "inputs" in body:
        raise invalid("Not supported both 'inputs' and 'instances' keys in the same request: "
                      "use either the row format or the columnar format.")
    names = sorted(input_dtypes)
    plain = not holds_fast_arrays(body)
    if "instances" in body:
        instances = body["instances"]
        if isinstance(instances, FastArray):
            if len(names) == 1:   # the common case: one unnamed input, rows of numbers
                return "row", {names[0]: to_ndarray(instances, input_dtypes[names[0]],
                                                    names[0], plain, check_shape)}
            instances = instances.load()
        if not isinstance(instances, list):
            raise invalid("Expecting 'instances' to be an list/array")
        if not instances:
            raise invalid("No instances found in the request: 'instances' is an empty list.")
        named = isinstance(instances[0], dict) and not _is_b64(instances[0])
        if named:
            for i, inst in enumerate(instances):
                if not isinstance(inst, dict) or _is_b64(inst):
                    raise invalid(f"Expecting object but got list at item {i} of input list")
                if sorted(inst) != names:
                    raise invalid(f"instance {i} has inputs {sorted(inst)} but the signature "
                                  f"takes {names}; every instance needs each named input.")
            return "row", {n: to_ndarray([inst[n] for inst in instances], input_dtypes[n], n,
                                         plain) for n in names}
        if len(names) != 1:
            raise invalid(f"The signature has {len(names)} inputs {names}: send each instance "
                          "as an object of named inputs (or use 'inputs').")
        name = names[0]
        return "row", {name: to_ndarray(instances, input_dtypes[name], name, plain,
                                        check_shape)}
    if "inputs" in body:
        inputs = body["inputs"]
        if isinstance(inputs, FastArray) and len(names) != 1:
            inputs = inputs.load()
        if isinstance(inputs, dict) and not _is_b64(inputs):
            if sorted(inputs) != names:
                extra, missing = sorted(set(inputs) - set(names)), sorted(set(names) - set(inputs))
                raise invalid(f"input size does not match signature: {len(inputs)}!={len(names)}"
                              f". Sent extra: {extra}. Missing but required: {missing}.")
            return "columnar", {n: to_ndarray(inputs[n], input_dtypes[n], n, plain,
                                              check_shape) for n in names}
        if len(names) != 1:
            raise invalid(f"The signature has {len(names)} inputs {names}: send 'inputs' as an "
                          "object of named inputs.")
        name = names[0]
        return "columnar", {name: to_ndarray(inputs, input_dtypes[name], name, plain,
                                             check_shape)}
    raise invalid("Missing 'inputs' or 'instances' key")


def _feature(name, value):
    """A tf.train.Feature from a JSON value, by TF Serving's rules (AddValueToFeature): the
    first element sets the list kind; integers are int64, decimals float, strings and
    ``{"b64": ...}`` bytes, booleans int64; an empty list is an empty Feature."""
    import tensorflow as tf

    kind, items = None, []
    for v in (value if isinstance(value, list) else [value]):
        if isinstance(v, bool):
            this, v = "int64", int(v)
        elif isinstance(v, int):
            if 2**63 <= v < 2**64:
                raise invalid(f"Feature: {name} has uint64_t element. Only int64_t is "
                              "supported.")
            this = "int64" if -2**63 <= v < 2**63 else "float"   # (a double to rapidjson)
        elif isinstance(v, float):
            this = "float"
        elif isinstance(v, str):
            this, v = "bytes", v.encode("utf-8")
        elif _is_b64(v):
            this, v = "bytes", _decode_b64(v)
        else:
            raise invalid(f"Feature: {name} has element with unexpected JSON type: "
                          f"{json_type(v)}")
        if kind is None:
            kind = this
        elif this != kind:
            raise invalid(f"Unexpected element type in feature: {name} expecting type: {kind}")
        items.append(v)
    if kind is None:
        return tf.train.Feature()
    if kind == "bytes":
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=items))
    if kind == "int64":
        return tf.train.Feature(int64_list=tf.train.Int64List(value=items))
    try:
        return tf.train.Feature(float_list=tf.train.FloatList(value=[float(v) for v in items]))
    except OverflowError:
        raise invalid(f"Feature '{name}': a number is too large for a float.") from None


def _example(obj):
    import tensorflow as tf

    if not isinstance(obj, dict):
        raise invalid(f"Example must be JSON object but got JSON {json_type(obj)}")
    return tf.train.Example(features=tf.train.Features(
        feature={k: _feature(k, v) for k, v in obj.items()}))


def parse_examples(body):
    """Serialized tf.Examples of a classify/regress body, in TF Serving's order of checks.

    ``context`` is serialized before each example, as TF Serving sends an
    ExampleListWithContext: a feature in both takes the example's value.
    """
    if holds_fast_arrays(body):
        body = load_all(body)
    prefix = b""
    if "context" in body:
        prefix = _example(body["context"]).SerializeToString()
    if "examples" not in body:
        raise invalid(f"JSON Value: {debug_string(body)} When method is classify, key "
                      "'examples' is expected and was not found")
    examples = body["examples"]
    if not isinstance(examples, list):
        raise invalid(f"JSON Value: {debug_string(body)} Expecting 'examples' value to be an "
                      "list/array")
    if not examples:
        raise invalid(f"JSON Value: {debug_string(body)} 'examples' value is an empty array")
    return [prefix + _example(obj).SerializeToString() for obj in examples]


# -- responses ----------------------------------------------------------------------------
def _json_value(array, name):
    array = np.asarray(array)
    kind = array.dtype.kind
    if kind in "OSU":
        binary = name.endswith("_bytes")

        def conv(v):
            if isinstance(v, str):
                return v
            if not binary:
                try:
                    return v.decode("utf-8")
                except UnicodeDecodeError:
                    pass
            return {_B64: base64.b64encode(v).decode("ascii")}
        flat = [conv(v) for v in array.ravel()]
    elif kind == "f" and array.dtype.itemsize == 4 and array.ndim and np.isfinite(array).all():
        # float32 printed at its own precision (0.1, not 0.10000000149011612): orjson's
        # shortest float32 digits are str()'s (the same value for every one of 3 million
        # random finite float32 bit patterns), ~7x faster than str() per element. (orjson
        # writes NaN/Infinity as null, so those take str()'s path below.)
        return orjson.loads(orjson.dumps(_native(array), option=orjson.OPT_SERIALIZE_NUMPY))
    elif kind == "f" and array.dtype.itemsize <= 4:
        # float32/float16 printed at their own precision (0.1, not 0.10000000149011612).
        flat = [float(str(v)) for v in array.ravel()]
    elif kind in "biuf":
        return array.tolist()
    else:
        raise invalid(f"Tensor name: {name} has unsupported tensor type: "
                      f"{_data_type_string(_tf_dtype(array.dtype))} for JSON conversion")
    if array.ndim == 0:
        return flat[0]
    out = np.empty(len(flat), dtype=object)
    out[:] = flat
    return out.reshape(array.shape).tolist()


def predict_response(fmt, outputs):
    """The JSON object of a predict response (``predictions`` or ``outputs``)."""
    if not outputs:
        raise invalid("Cannot convert empty tensor map to JSON")
    if fmt == "columnar":
        if len(outputs) == 1:
            (name, value), = outputs.items()
            return {"outputs": _json_value(value, name)}
        return {"outputs": {n: _json_value(v, n) for n, v in outputs.items()}}
    batch = None
    for name, value in outputs.items():
        if np.ndim(value) == 0:
            raise invalid(f"Tensor name: {name} has no shape information; use the columnar "
                          "format ('inputs') for scalar outputs.")
        if batch is None:
            batch = np.shape(value)[0]
        elif np.shape(value)[0] != batch:
            raise invalid(f"Tensor name: {name} has inconsistent batch size: "
                          f"{np.shape(value)[0]} expecting: {batch}")
    if len(outputs) == 1:
        (name, value), = outputs.items()
        return {"predictions": _json_value(value, name)}
    columns = {n: _json_value(v, n) for n, v in outputs.items()}
    return {"predictions": [{n: columns[n][i] for n in columns} for i in range(batch)]}


_NUMPY = orjson.OPT_SERIALIZE_NUMPY


def _native(array):
    """``array`` as orjson reads numpy: C-contiguous, in native byte order."""
    return np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("="))


def _dump(value):
    return orjson.dumps(value, option=_NUMPY)


def _fast_column(array, name):
    """One output as orjson writes it straight from numpy (a C-contiguous array; float32 may
    hold NaN or Infinity, which orjson writes as ``null``), or a list of strings; None for
    what only ``_json_value``'s path prints as TF Serving does (float16/float64, a 0-d or
    unsupported tensor)."""
    array = np.asarray(array)
    kind = array.dtype.kind
    if not array.ndim:
        return None
    if kind in "biu" or (kind == "f" and array.dtype.itemsize == 4):
        return _native(array)
    if kind == "O" and array.ndim == 1 and not name.endswith("_bytes"):
        try:   # (TF's string outputs: UTF-8 bytes; anything else takes _json_value's path)
            return [v.decode("utf-8") for v in array.tolist()]
        except (AttributeError, UnicodeDecodeError):
            pass
    if kind in "OSU":
        return _json_value(array, name)
    return None


def predict_response_json(fmt, outputs):
    """``predict_response(fmt, outputs)`` as JSON bytes: the same values as
    ``json.dumps(predict_response(...))`` and the same top-level layout
    (``{"predictions": ...}``), with arrays written by orjson straight from numpy (float32
    at its own shortest digits, as ``predict_response`` prints them; integers and booleans
    as they are). An answer that only ``predict_response`` prints right takes its path
    whole: NaN or Infinity (orjson writes ``null``: any ``null`` in the text sends it there),
    float16 or float64, scalars, inconsistent batch sizes (worded there).

    Raises:
        ServingError: INVALID_ARGUMENT, as ``predict_response``.
    """
    out = _predict_json(fmt, outputs) if outputs else None
    if out is None or b"null" in out:
        return json.dumps(predict_response(fmt, outputs)).encode()
    return out


def _predict_json(fmt, outputs):
    columns = {}
    for name, value in outputs.items():
        column = _fast_column(value, name)
        if column is None:
            return None
        columns[name] = column
    key = b'{"outputs": ' if fmt == "columnar" else b'{"predictions": '
    try:
        if len(columns) == 1:
            (column,) = columns.values()
            return key + _dump(column) + b"}"
        names = {n: _dump(n) + b": " for n in columns}
        if fmt == "columnar":
            return key + b"{" + b", ".join(names[n] + _dump(c) for n, c in columns.items()) \
                + b"}}"
        batch = {len(c) for c in columns.values()}
        if len(batch) > 1:
            return None
        return key + b"[" + b", ".join(
            b"{" + b", ".join(names[n] + _dump(c[i]) for n, c in columns.items()) + b"}"
            for i in range(batch.pop())) + b"]}"
    except orjson.JSONEncodeError:   # (a string orjson will not write: a lone surrogate)
        return None


def status_response(statuses):
    return {"model_version_status": [
        {"version": str(s.version), "state": s.state,
         "status": {"error_code": s.error_code, "error_message": s.error_message}}
        for s in statuses]}


def metadata_response(name, version, signature_defs, runtime=None):
    from google.protobuf import json_format
    from tensorflow_serving.apis import get_model_metadata_pb2

    sig_map = get_model_metadata_pb2.SignatureDefMap()
    for k, v in signature_defs.items():
        sig_map.signature_def[k].CopyFrom(v)
    extra = {} if runtime is None else {"runtime": runtime}   # (--runtime other than tensorflow)
    return {"model_spec": {"name": name, "signature_name": "", "version": str(version)},
            "metadata": {**extra, "signature_def": json_format.MessageToDict(
                sig_map, preserving_proto_field_name=True,
                always_print_fields_with_no_presence=True)}}
