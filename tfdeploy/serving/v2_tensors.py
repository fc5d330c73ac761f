"""Open Inference Protocol (V2) tensors <-> numpy, shared by the V2 REST and gRPC front ends.

A V2 tensor is ``name``, ``datatype`` (``FP32``, ``INT64``, ``BYTES``, ...), ``shape`` and its
elements: JSON ``data`` (flat or nested, row-major), Triton's binary tensor data (raw
little-endian bytes; BYTES elements each a 4-byte little-endian length and the bytes), or
gRPC ``contents`` / ``raw_input_contents``. Every tensor is checked here for what the
protocol fixes (the datatype is the signature's, the shape is non-negative and matches the
element count) and against the signature's shape before its elements are materialised; the
data plane's validation then checks names, dtypes, ranks and static dimensions as for V1.
"""

import struct

import numpy as np

from tfdeploy.serving.status import invalid

# TF dtype name (validation.TensorSpec.dtype) <-> V2 datatype
V2_DATATYPE = {"float32": "FP32", "float64": "FP64", "float16": "FP16", "int8": "INT8",
               "int16": "INT16", "int32": "INT32", "int64": "INT64", "uint8": "UINT8",
               "uint16": "UINT16", "uint32": "UINT32", "uint64": "UINT64", "bool": "BOOL",
               "string": "BYTES", "bfloat16": "BF16"}
NUMPY = {"FP32": np.float32, "FP64": np.float64, "FP16": np.float16, "INT8": np.int8,
         "INT16": np.int16, "INT32": np.int32, "INT64": np.int64, "UINT8": np.uint8,
         "UINT16": np.uint16, "UINT32": np.uint32, "UINT64": np.uint64, "BOOL": np.bool_,
         "BYTES": np.object_}
_LE = {k: np.dtype(v).newbyteorder("<") for k, v in NUMPY.items() if k != "BYTES"}
MAX_RANK = 64


def datatype_of(tf_name):
    """The V2 datatype of a TF dtype name (the TF name itself for one V2 has no name for)."""
    return V2_DATATYPE.get(tf_name, tf_name)


def datatype_of_array(array):
    kind = array.dtype.kind
    if kind in "OSU":
        return "BYTES"
    return V2_DATATYPE.get(array.dtype.name, array.dtype.name)


def check_shape(name, shape):
    """A tensor's ``shape``: a list of non-negative integers; returns ``(shape, numel)``."""
    if not isinstance(shape, (list, tuple)) or len(shape) > MAX_RANK or not all(
            isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
        raise invalid(f"Input '{name}': 'shape' must be a list of at most {MAX_RANK} "
                      f"non-negative integers, got {str(shape)[:80]}.")
    numel = 1
    for d in shape:
        numel *= d
    return tuple(shape), numel


def check_datatype(name, datatype, specs):
    """The numpy dtype for input ``name`` sent as ``datatype``; INVALID_ARGUMENT when the
    signature has no such input or expects another datatype (V2 does not convert)."""
    spec = specs.get(name)
    if spec is None:
        raise invalid(f"Input '{name}' is not an input of the model's signature; its inputs "
                      f"are {sorted(specs)} (see GET /v2/models/NAME).")
    if not isinstance(datatype, str) or datatype not in NUMPY:
        raise invalid(f"Input '{name}': unknown datatype {str(datatype)[:40]!r}; V2 datatypes "
                      f"are {sorted(NUMPY)}.")
    want = datatype_of(spec.dtype)
    if datatype != want:
        raise invalid(f"Input '{name}' has datatype {datatype} but the model expects {want}; "
                      f"send it as {want}.")
    return NUMPY[datatype]


def from_json(name, datatype, shape, numel, data):
    """The ndarray of JSON ``data`` (flat or nested lists) of a ``datatype`` tensor."""
    if not isinstance(data, list):
        data = [data]
    try:
        if datatype == "BYTES":
            flat = np.asarray(data, dtype=object).reshape(-1)
            if not all(isinstance(v, str) for v in flat):
                raise ValueError("BYTES elements must be strings")
            array = np.array([v.encode("utf-8") for v in flat] or [], dtype=object)
        else:
            raw = np.asarray(data)
            if raw.size == 0:
                raw = raw.astype(NUMPY[datatype])
            elif datatype[0] in "IU" and raw.dtype.kind in "fO":
                raw = _big_ints(datatype, raw, data)   # numpy took ints past int64 as float
            if raw.dtype.kind not in _ACCEPTS[datatype]:
                raise ValueError(f"{datatype} elements must be {_WORDS[datatype]}")
            if raw.dtype.kind in "iu" and datatype[0] in "IU":
                info = np.iinfo(NUMPY[datatype])
                if raw.size and (raw.min() < info.min or raw.max() > info.max):
                    raise ValueError(f"a value is outside {datatype}'s range "
                                     f"[{info.min}, {info.max}]")
            array = raw.astype(NUMPY[datatype]).reshape(-1)
    except (ValueError, TypeError, OverflowError, RecursionError, UnicodeError) as exc:
        raise invalid(f"Input '{name}': its data cannot be read as {datatype}: "
                      f"{str(exc)[:200]}.") from None
    return _shaped(name, array, shape, numel)


def _big_ints(datatype, raw, data):
    """Integers past int64 (UINT64's upper half): numpy reads them as float64 or objects;
    each element must be an int in range, converted exactly."""
    flat = np.asarray(data, dtype=object).reshape(-1)
    if not all(type(v) is int for v in flat):
        raise ValueError(f"{datatype} elements must be integers")
    info = np.iinfo(NUMPY[datatype])
    if min(flat) < info.min or max(flat) > info.max:
        raise ValueError(f"a value is outside {datatype}'s range [{info.min}, {info.max}]")
    return np.array(list(flat), dtype=NUMPY[datatype]).reshape(raw.shape)


_ACCEPTS = {"BOOL": "b", "FP16": "iuf", "FP32": "iuf", "FP64": "iuf"}
_ACCEPTS.update({k: "iu" for k in NUMPY if k[0] in "IU"})
_WORDS = {"BOOL": "true or false", "FP16": "numbers", "FP32": "numbers", "FP64": "numbers"}
_WORDS.update({k: "integers" for k in NUMPY if k[0] in "IU"})


def _shaped(name, array, shape, numel):
    if array.size != numel:
        raise invalid(f"Input '{name}': shape {list(shape)} holds {numel} elements but "
                      f"{array.size} were sent; send as many as the shape's product.")
    return array.reshape(shape)


def from_raw(name, datatype, shape, numel, raw):
    """The ndarray of raw bytes (Triton's binary data, gRPC ``raw_input_contents``)."""
    if datatype == "BYTES":
        array = np.array(split_bytes(name, raw), dtype=object)
        return _shaped(name, array, shape, numel)
    dtype = _LE[datatype]
    if len(raw) != numel * dtype.itemsize:
        raise invalid(f"Input '{name}': shape {list(shape)} of {datatype} needs "
                      f"{numel * dtype.itemsize} bytes, got {len(raw)}.")
    array = np.frombuffer(raw, dtype=dtype).astype(NUMPY[datatype], copy=False)
    if datatype == "BOOL" and array.size and np.frombuffer(raw, np.uint8).max() > 1:
        raise invalid(f"Input '{name}': BOOL bytes must be 0 or 1.")
    return array.reshape(shape)


def split_bytes(name, raw):
    """Elements of serialized BYTES: each a 4-byte little-endian length then the bytes."""
    out, i, n = [], 0, len(raw)
    view = memoryview(raw)
    while i < n:
        if i + 4 > n:
            raise invalid(f"Input '{name}': BYTES data ends inside an element's 4-byte length "
                          "prefix; each element is a little-endian uint32 length and then "
                          "its bytes.")
        (length,) = struct.unpack_from("<I", raw, i)
        i += 4
        if i + length > n:
            raise invalid(f"Input '{name}': a BYTES element declares {length} bytes but only "
                          f"{n - i} remain.")
        out.append(bytes(view[i:i + length]))
        i += length
    return out


def to_raw(array):
    """Raw bytes of an output (BYTES serialized with 4-byte length prefixes)."""
    if array.dtype.kind in "OSU":
        parts = []
        for v in array.reshape(-1):
            b = v if isinstance(v, bytes) else str(v).encode("utf-8")
            parts.append(struct.pack("<I", len(b)))
            parts.append(b)
        return b"".join(parts)
    return np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).tobytes()


def to_json_data(name, array):
    """The flat JSON ``data`` list of an output."""
    flat = array.reshape(-1)
    if array.dtype.kind in "OSU":
        try:
            return [v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in flat]
        except UnicodeDecodeError:
            raise invalid(f"Output '{name}' holds bytes that are not UTF-8, which JSON cannot "
                          "carry; request it with the parameter binary_data: true.") from None
    return flat.tolist()
