"""TF Serving's own JSON test cases (util/json_tensor_test.cc), translated into a table.

Each row is an upstream test's request and the tensor it must become (dtype, shape,
values, row/columnar format) or the error class it must raise. Run against
``rest_json.parse_predict`` with the same TensorInfo dtypes as upstream, plus the
error cases end-to-end through a server (http_rest_api_handler_test.cc's statuses).
"""

import json
import math

import numpy as np
import pytest

from tfdeploy.serving import rest_json
from tfdeploy.serving.status import ServingError

NAN = float("nan")

# (upstream test, {input: dtype}, JSON body, {input: (numpy dtype, shape, flat values)}, format)
CASES = [
    ("SingleUnnamedTensor", {"default": "int32"}, '{"instances": [[1,2],[3,4],[5,6]]}',
     {"default": ("int32", (3, 2), [1, 2, 3, 4, 5, 6])}, "row"),
    ("MixedInputForFloatTensor", {"default": "float32"},
     '{"instances": [1, 2.0, 3, 4, 5.003, 0.007, 0.0]}',
     {"default": ("float32", (7,), [1, 2, 3, 4, 5.003, 0.007, 0])}, "row"),
    ("MixedInputForDoubleTensor", {"default": "float64"},
     '{"instances": [1.0, 2, 3, 4, 0.662, 0, 0.0]}',
     {"default": ("float64", (7,), [1, 2, 3, 4, 0.662, 0, 0])}, "row"),
    ("SingleUnnamedTensorWithSignature", {"default": "int32"},
     '{"signature_name": "predict_images", "instances": [[1,2]]}',
     {"default": ("int32", (1, 2), [1, 2])}, "row"),
    ("SingleUnnamedTensorBase64Scalars", {"default": "string"},
     '{"instances": [ { "b64" : "aGVsbG8=" }, { "b64": "d29ybGQ=" } ]}',
     {"default": ("object", (2,), [b"hello", b"world"])}, "row"),
    ("SingleUnnamedTensorBase64Lists", {"default": "string"},
     '{"instances": [ [{ "b64" : "aGVsbG8=" }], [{ "b64": "d29ybGQ=" }] ]}',
     {"default": ("object", (2, 1), [b"hello", b"world"])}, "row"),
    ("SingleNamedTensorBase64", {"default": "string"},
     '{"instances": [{"default": [ [{ "b64" : "aGVsbG8=" }], [{ "b64": "d29ybGQ=" }] ]}]}',
     {"default": ("object", (1, 2, 1), [b"hello", b"world"])}, "row"),
    ("MultipleNamedTensor",
     {"int_tensor": "int32", "str_tensor": "string", "float_tensor": "float32",
      "dbl_tensor": "float64"},
     '{"instances": [{"int_tensor": [[1,2],[3,4],[5,6]], "str_tensor": ["foo", "bar"],'
     ' "float_tensor": [1.0, NaN], "dbl_tensor": [NaN]}, {"int_tensor": [[7,8],[9,0],[1,2]],'
     ' "str_tensor": ["baz", "bat"], "float_tensor": [2.0, Infinity], "dbl_tensor": [2.0]}]}',
     {"int_tensor": ("int32", (2, 3, 2), [1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1, 2]),
      "str_tensor": ("object", (2, 2), [b"foo", b"bar", b"baz", b"bat"]),
      "float_tensor": ("float32", (2, 2), [1.0, NAN, 2.0, math.inf]),
      "dbl_tensor": ("float64", (2, 1), [NAN, 2.0])}, "row"),
    ("SingleUnnamedTensorColumnarFormat (named)", {"int_tensor": "int32"},
     '{"inputs": {"int_tensor": [[[1,2],[3,4],[5,6]]]}}',
     {"int_tensor": ("int32", (1, 3, 2), [1, 2, 3, 4, 5, 6])}, "columnar"),
    ("SingleUnnamedTensorColumnarFormat (unnamed)", {"int_tensor": "int32"},
     '{"inputs": [[[1,2],[3,4],[5,6]]]}',
     {"int_tensor": ("int32", (1, 3, 2), [1, 2, 3, 4, 5, 6])}, "columnar"),
    ("MultipleNamedTensorColumnarFormat",
     {"int_tensor": "int32", "str_tensor": "string", "bin_tensor": "string"},
     '{"inputs": {"int_tensor": [[[1,2],[3,4],[5,6]]], "str_tensor": ["foo", "bar"],'
     ' "bin_tensor": { "b64" : "aGVsbG8=" }}}',
     {"int_tensor": ("int32", (1, 3, 2), [1, 2, 3, 4, 5, 6]),
      "str_tensor": ("object", (2,), [b"foo", b"bar"]),
      "bin_tensor": ("object", (), [b"hello"])}, "columnar"),
]

FLOAT_MAX, FLOAT_MIN = 1.7976931348623157e+308, 2.2250738585072014e-308   # double's limits
DEEP = "[" * 500000 + "]" * 500000
CASES += [
    ("FloatTensorWithPrecisionLoss (int)", {"default": "float32"}, '{"instances": [1435774380]}',
     {"default": ("float32", (1,), [np.float32(1435774380)])}, "row"),
    ("FloatTensorWithPrecisionLoss (decimal)", {"default": "float32"},
     '{"instances": [1435774380.0]}', {"default": ("float32", (1,), [np.float32(1435774380)])},
     "row"),
    ("FloatTensorThatExceedsMaxReturnsInf", {"default": "float32"},
     f'{{ "instances": [{FLOAT_MAX!r}, {-FLOAT_MAX!r}] }}',
     {"default": ("float32", (2,), [math.inf, -math.inf])}, "row"),
    ("FloatTensorThatExceedsMinReturnsZero", {"default": "float32"},
     f'{{ "instances": [{FLOAT_MIN!r}, {-FLOAT_MIN!r}] }}',
     {"default": ("float32", (2,), [0.0, -0.0])}, "row"),
    ("DeeplyNestedWellFormed", {"default": "int32"}, '{"instances":[1], "nested":' + DEEP + "}",
     {"default": ("int32", (1,), [1])}, "row"),
]

# (upstream test / case, {input: dtype}, body, substring of TF Serving's message or ours)
ERRORS = [
    ("SingleUnnamedTensorErrors: empty document", {"default": "int32"}, "", "JSON Parse error"),
    ("SingleUnnamedTensorErrors: signature_name 5", {"default": "int32"},
     '{"signature_name": 5, "instances": [[1,2],[3,4],[5,6,7]]}', "signature_name"),
    ("SingleUnnamedTensorErrors: instances and inputs", {"default": "int32"},
     '{"instances": [[1,2],[3,4],[5,6,7]], "inputs": [[1,2],[3,4],[5,6,7]]}',
     "Not supported both"),
    ("SingleUnnamedTensorErrors: ragged", {"default": "int32"},
     '{"instances": [[1,2],[3,4],[5,6,7]]}', "same shape"),
    ("SingleUnnamedTensorErrors: deeper element", {"default": "int32"},
     '{"instances": [[1,2],[3,4],[[5,6]]]}', "same shape"),
    ("SingleUnnamedTensorErrors: scalar then list", {"default": "int32"},
     '{"instances": [1, [1]]}', "same shape"),
    ("SingleUnnamedTensorErrors: string for int", {"default": "int32"},
     '{"instances": [["a", "b"]]}',
     'JSON Value: "a" Type: String is not of expected type: int32'),
    ("MultipleNamedTensorErrors: missing input", {"a": "int32", "b": "int32"},
     '{"instances": [{"a": 1}]}', "every instance needs each named input"),
    ("MultipleNamedTensorErrors: object then list", {"a": "int32", "b": "int32"},
     '{"instances": [{"a": 1, "b": 2}, [1]]}', "Expecting object but got list"),
    ("ColumnarErrors: extra input", {"a": "int32"},
     '{"inputs": {"a": [1], "c": [2]}}', "input size does not match signature"),
    ("Base64Errors: bad base64", {"default": "string"},
     '{"instances": [{"b64": "#"}]}', "base64"),
    ("IntOverflow: int32", {"default": "int32"}, '{"instances": [2147483648]}',
     "JSON Value: 2147483648 Type: Number is not of expected type: int32"),
    ("UnsupportedDtype: complex64", {"default": "complex64"}, '{"instances": [1]}', "complex64"),
    ("DeeplyNestedMalformed", {"default": "int32"}, '{"signature_name":' + DEEP + "}",
     "key must be a string value"),
]


def _dtypes(spec):
    import tensorflow as tf

    return {k: tf.dtypes.as_dtype(v) for k, v in spec.items()}


def _body(text):
    from tfdeploy.serving.rest import RestApi

    return RestApi._parse_body(text.encode())


@pytest.mark.parametrize("name,spec,text,expected,fmt", CASES, ids=[c[0] for c in CASES])
def test_upstream_json_tensor_cases(name, spec, text, expected, fmt):
    got_fmt, tensors = rest_json.parse_predict(_body(text), _dtypes(spec))
    assert got_fmt == fmt
    assert sorted(tensors) == sorted(expected)
    for key, (dtype, shape, values) in expected.items():
        array = tensors[key]
        assert array.dtype == np.dtype(dtype) and array.shape == shape, (key, array)
        if dtype == "object":
            assert list(array.ravel()) == values
        else:
            np.testing.assert_allclose(array.ravel().astype(np.float64), values, rtol=1e-6)
            assert list(np.signbit(array.ravel())) == list(np.signbit(values))   # -0.0 stays


@pytest.mark.parametrize("name,spec,text,message", ERRORS, ids=[e[0] for e in ERRORS])
def test_upstream_json_tensor_errors(name, spec, text, message):
    with pytest.raises(ServingError) as info:
        rest_json.parse_predict(_body(text), _dtypes(spec))
    assert info.value.code == "INVALID_ARGUMENT" and info.value.http_status == 400
    assert message in info.value.message, info.value.message


def test_upstream_predict_response_formats():
    """MakeJsonFromTensors: row answers are lists of objects for several outputs, a plain
    list for one; columnar answers an object; float32 printed at float32 precision."""
    outs = {"a": np.array([[1.0, 2.0]], np.float32), "s": np.array([b"x"], object)}
    assert rest_json.predict_response("row", outs) == {"predictions": [{"a": [1.0, 2.0],
                                                                        "s": "x"}]}
    assert rest_json.predict_response("columnar", outs) == {"outputs": {"a": [[1.0, 2.0]],
                                                                        "s": ["x"]}}
    assert rest_json.predict_response("row", {"y": np.array([0.1], np.float32)}) == {
        "predictions": [0.1]}
    binary = rest_json.predict_response("columnar", {"img_bytes": np.array([b"\xff"], object)})
    assert binary == {"outputs": [{"b64": "/w=="}]}
    json.dumps(binary)


# -- ClassifyRegressRequestTest: examples (and context) to tf.Example, and its JsonErrors ------
def _examples(text):
    import tensorflow as tf
    from google.protobuf import json_format

    return [json_format.MessageToDict(tf.train.Example.FromString(s))["features"]["feature"]
            for s in rest_json.parse_examples(_body(text))]


def test_upstream_classify_regress_request_no_context():
    assert _examples('{"examples": [{"names": [ "foo", "bar" ], "ratings": [ 8.0, 9.0 ], '
                     '"age": 20}, {"names": [ "baz" ], "ratings": 6.0}]}') == [
        {"names": {"bytesList": {"value": ["Zm9v", "YmFy"]}},          # foo, bar
         "ratings": {"floatList": {"value": [8.0, 9.0]}},
         "age": {"int64List": {"value": ["20"]}}},
        {"names": {"bytesList": {"value": ["YmF6"]}}, "ratings": {"floatList": {"value": [6.0]}}}]


def test_upstream_classify_regress_request_with_context():
    # the context is serialized before each example (ExampleListWithContext): the example's
    # own value of a feature in both wins, as when TF Serving merges them
    got = _examples('{"context": {"zip": 94043, "x": 1.0}, "examples": [{"x": 2.0}, {}, '
                    '{"flag": true, "empty": []}]}')
    zip_, x1 = {"int64List": {"value": ["94043"]}}, {"floatList": {"value": [1.0]}}
    assert got == [{"zip": zip_, "x": {"floatList": {"value": [2.0]}}},
                   {"zip": zip_, "x": x1},
                   {"zip": zip_, "x": x1, "flag": {"int64List": {"value": ["1"]}}, "empty": {}}]


@pytest.mark.parametrize("text,message", [
    ('{"signature_name": [ "hello" ], "examples": [ { "names": [ "foo", "bar" ] } ]}',
     "'signature_name' key must be a string"),
    ('{"context": [ { "names": [ "foo", "bar" ] } ]}', "Example must be JSON object"),
    ('{"examples": { "names": [ "foo", "bar" ] }}', "list/array"),
    ('{"examples": [ [ { "names": [ "foo", "bar" ] } ] ]}', "Example must be JSON object"),
    ('{"examples": [ { "names": [ 10, null ] } ]}',
     "names has element with unexpected JSON type: Null"),
    ('{"examples": [ { "names": [ 10, 10.0 ] } ]}', "feature: names expecting type: int64"),
    ('{"examples": [ { "names": [ 10, { "test": 10 } ] } ]}',
     "names has element with unexpected JSON type: Object"),
    ('{"examples": [ { "names": [ [10], 20 ] } ]}',
     "names has element with unexpected JSON type: Array"),
    ('{"examples": [ { "names": [ 20, 18446744073709551603 ] } ]}', "Only int64_t is supported"),
    ('{"context": {"x": 1}}', "key 'examples' is expected and was not found"),
    ('{"examples": []}', "'examples' value is an empty array"),
])
def test_upstream_classify_regress_json_errors(text, message):
    with pytest.raises(ServingError) as info:
        rest_json.parse_examples(_body(text))
    assert info.value.code == "INVALID_ARGUMENT" and message in info.value.message, \
        info.value.message


# -- FromJson* / MakeJsonFromTensors: responses ----------------------------------------------
def _dumps(fmt, outputs):
    return json.dumps(rest_json.predict_response(fmt, outputs))


def _dumps_fast(fmt, outputs):
    return rest_json.predict_response_json(fmt, outputs).decode()


@pytest.mark.parametrize("dumps", [_dumps, _dumps_fast])
def test_upstream_response_float_precision_and_non_finite(dumps):
    six = np.array([[9000000, 999999, 0.5], [.0003, .00003, 555557.5]], np.float32)
    text = dumps("row", {"float_tensor": six})
    # TF Serving writes 9e+06 for the first value (printf %g); the number is the same
    expected = [[9e+06, 999999.0, 0.5], [0.0003, 3e-05, 555557.5]]
    assert json.loads(text) == {"predictions": expected}
    bad = np.array([[NAN, math.inf], [3, -math.inf]], np.float32)
    text = dumps("row", {"float_tensor": bad})
    assert text == '{"predictions": [[NaN, Infinity], [3.0, -Infinity]]}'


_LABELS = np.array([b"cat", "\u00e9t\u00e9".encode(), b"null", b"\xff\xfe"], dtype=object)
_F32 = np.random.default_rng(0).integers(0, 1 << 32, size=4096, dtype=np.uint64).astype(
    np.uint32).view(np.float32)


@pytest.mark.parametrize("outputs", [
    {"probabilities": _F32[np.isfinite(_F32)][:4000].reshape(4, 1000)},   # random bit patterns
    {"probabilities": np.float32([[0.1, 0.2], [0.3, 0.4], [5, 6], [7, 8]]),
     "class_index": np.int64([1, 0, 1, 1]), "class_label": _LABELS,
     "score": np.float32([0.25, 1e-7, 3e+30, -0.0])},
    {"ok": np.float32([[1, 2]] * 4), "bad": np.float32([1, NAN, math.inf, 2])},
    {"echo_bytes": _LABELS, "flag": np.array([True, False, True, True])},
    {"u": np.array([["a", "\u00e9"], ["b", "c"]]), "big": np.uint64([2**63 + 5, 1]),
     "small": np.int8([[-128, 127], [0, 1]])},
    {"half": np.float16([0.1, 2]), "double": np.float64([0.1, 1e300])},
    {"big_endian": np.array([[0.1, 2], [3, 4]], ">f4"), "ints": np.array([7, 8], ">i8"),
     "transposed": np.float32([[1, 2], [3, 4]]).T},
])
@pytest.mark.parametrize("fmt", ["row", "columnar"])
def test_response_json_bytes_hold_the_same_values(outputs, fmt):
    """predict_response_json (orjson straight from numpy) answers what json.dumps of
    predict_response answers, value for value, with the same top-level layout."""
    fast, plain = _dumps_fast(fmt, outputs), _dumps(fmt, outputs)
    assert json.loads(fast) == json.loads(plain)
    assert fast.startswith('{"outputs": ' if fmt == "columnar" else '{"predictions": ')


@pytest.mark.parametrize("dumps", [_dumps, _dumps_fast])
@pytest.mark.parametrize("outputs,message", [
    ({}, "empty tensor map"),
    ({"tensor": np.array([1 + 2j, 2], np.complex64)}, "tensor type: complex64"),
    ({"tensor": np.int32(1)}, "no shape information"),
    ({"a": np.float32([1, 2]), "b": np.float32([1, 2, 3])}, "inconsistent batch size: 3"),
])
def test_upstream_response_errors(outputs, message, dumps):
    with pytest.raises(ServingError) as info:
        dumps("row", outputs)
    assert info.value.code == "INVALID_ARGUMENT" and message in info.value.message
