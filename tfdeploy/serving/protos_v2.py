"""The Open Inference Protocol's gRPC messages (KServe's ``grpc_predict_v2.proto``).

Declared here, field for field, with the protocol's package (``inference``), message names,
field numbers and types, in a private descriptor pool (as ``protos.py`` declares TF Serving's
``BatchingParameters``), so the bytes on the wire are the protocol's. Why not import a
client's generated modules: ``tritonclient`` pins ``protobuf<7`` and ``ml-dtypes<=0.5.4``
(TensorFlow 2.21 needs newer ones) and KServe pins half of its stack, so neither can be a
run-time dependency of the server; and a generated module registers ``inference.*`` in the
default pool, where a client's own copy (a test, an in-process client) then collides.
``tests/test_serving_v2.py`` checks every message here against tritonclient's and KServe's
generated descriptors (names, numbers, types, labels).

    from tfdeploy.serving.protos_v2 import messages
    m = messages()
    request = m.ModelInferRequest.FromString(data)
"""

import functools
import types

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

SERVICE = "inference.GRPCInferenceService"
_F = descriptor_pb2.FieldDescriptorProto
_T = {"bool": _F.TYPE_BOOL, "string": _F.TYPE_STRING, "int64": _F.TYPE_INT64,
      "int32": _F.TYPE_INT32, "uint32": _F.TYPE_UINT32, "uint64": _F.TYPE_UINT64,
      "float": _F.TYPE_FLOAT, "double": _F.TYPE_DOUBLE, "bytes": _F.TYPE_BYTES}

# message -> [(number, name, type, repeated)]; a type starting with "." is a message, with
# "map:" a map<string, InferParameter>, "oneof:" a member of the named oneof.
_PARAMS = "map:.inference.InferParameter"
_TENSOR = [(1, "name", "string", False), (2, "datatype", "string", False),
           (3, "shape", "int64", True)]
_CONTENTS = (5, "contents", ".inference.InferTensorContents", False)
_MESSAGES = {
    "ServerLiveRequest": [], "ServerLiveResponse": [(1, "live", "bool", False)],
    "ServerReadyRequest": [], "ServerReadyResponse": [(1, "ready", "bool", False)],
    "ModelReadyRequest": [(1, "name", "string", False), (2, "version", "string", False)],
    "ModelReadyResponse": [(1, "ready", "bool", False)],
    "ServerMetadataRequest": [],
    "ServerMetadataResponse": [(1, "name", "string", False), (2, "version", "string", False),
                               (3, "extensions", "string", True)],
    "ModelMetadataRequest": [(1, "name", "string", False), (2, "version", "string", False)],
    "ModelMetadataResponse": [
        (1, "name", "string", False), (2, "versions", "string", True),
        (3, "platform", "string", False),
        (4, "inputs", ".inference.ModelMetadataResponse.TensorMetadata", True),
        (5, "outputs", ".inference.ModelMetadataResponse.TensorMetadata", True)],
    "ModelMetadataResponse.TensorMetadata": _TENSOR,
    "InferParameter": [(1, "bool_param", "oneof:bool", False),
                       (2, "int64_param", "oneof:int64", False),
                       (3, "string_param", "oneof:string", False),
                       (4, "double_param", "oneof:double", False),
                       (5, "uint64_param", "oneof:uint64", False)],
    "InferTensorContents": [(1, "bool_contents", "bool", True), (2, "int_contents", "int32", True),
                            (3, "int64_contents", "int64", True),
                            (4, "uint_contents", "uint32", True),
                            (5, "uint64_contents", "uint64", True),
                            (6, "fp32_contents", "float", True),
                            (7, "fp64_contents", "double", True),
                            (8, "bytes_contents", "bytes", True)],
    "ModelInferRequest": [
        (1, "model_name", "string", False), (2, "model_version", "string", False),
        (3, "id", "string", False), (4, "parameters", _PARAMS, False),
        (5, "inputs", ".inference.ModelInferRequest.InferInputTensor", True),
        (6, "outputs", ".inference.ModelInferRequest.InferRequestedOutputTensor", True),
        (7, "raw_input_contents", "bytes", True)],
    "ModelInferRequest.InferInputTensor": _TENSOR + [(4, "parameters", _PARAMS, False),
                                                     _CONTENTS],
    "ModelInferRequest.InferRequestedOutputTensor": [(1, "name", "string", False),
                                                     (2, "parameters", _PARAMS, False)],
    "ModelInferResponse": [
        (1, "model_name", "string", False), (2, "model_version", "string", False),
        (3, "id", "string", False), (4, "parameters", _PARAMS, False),
        (5, "outputs", ".inference.ModelInferResponse.InferOutputTensor", True),
        (6, "raw_output_contents", "bytes", True)],
    "ModelInferResponse.InferOutputTensor": _TENSOR + [(4, "parameters", _PARAMS, False),
                                                       _CONTENTS],
}

# RPC -> (request, response) message names.
METHODS = {"ServerLive": ("ServerLiveRequest", "ServerLiveResponse"),
           "ServerReady": ("ServerReadyRequest", "ServerReadyResponse"),
           "ModelReady": ("ModelReadyRequest", "ModelReadyResponse"),
           "ServerMetadata": ("ServerMetadataRequest", "ServerMetadataResponse"),
           "ModelMetadata": ("ModelMetadataRequest", "ModelMetadataResponse"),
           "ModelInfer": ("ModelInferRequest", "ModelInferResponse")}


def _declare(msg, fields):
    for number, name, ftype, repeated in fields:
        f = msg.field.add(name=name, number=number,
                          label=_F.LABEL_REPEATED if repeated else _F.LABEL_OPTIONAL)
        if ftype.startswith("oneof:"):
            if not msg.oneof_decl:
                msg.oneof_decl.add(name="parameter_choice")
            f.oneof_index, ftype = 0, ftype[len("oneof:"):]
        if ftype.startswith("map:"):   # map<string, V>: a repeated nested XxxEntry message
            entry = msg.nested_type.add(name=name.title().replace("_", "") + "Entry")
            entry.options.map_entry = True
            entry.field.add(name="key", number=1, type=_F.TYPE_STRING, label=_F.LABEL_OPTIONAL)
            entry.field.add(name="value", number=2, type=_F.TYPE_MESSAGE,
                            type_name=ftype[len("map:"):], label=_F.LABEL_OPTIONAL)
            f.label, f.type = _F.LABEL_REPEATED, _F.TYPE_MESSAGE
            f.type_name = entry.name
        elif ftype.startswith("."):
            f.type, f.type_name = _F.TYPE_MESSAGE, ftype
        else:
            f.type = _T[ftype]


@functools.lru_cache(maxsize=None)
def messages():
    """A namespace of the protocol's message classes (``ModelInferRequest``, ...; nested
    ones as ``ModelInferRequest.InferInputTensor``)."""
    file = descriptor_pb2.FileDescriptorProto(name="tfdeploy/grpc_predict_v2.proto",
                                              package="inference", syntax="proto3")
    protos = {}
    for name in _MESSAGES:   # (outer messages come before their nested ones)
        outer, _, inner = name.partition(".")
        protos[name] = (protos[outer].nested_type.add(name=inner) if inner
                        else file.message_type.add(name=outer))
    for name, fields in _MESSAGES.items():
        _declare(protos[name], fields)
    for name, msg in protos.items():   # map entries are named relative to their message
        for f in msg.field:
            if f.type == _F.TYPE_MESSAGE and not f.type_name.startswith("."):
                f.type_name = f".inference.{name}.{f.type_name}"
    service = file.service.add(name=SERVICE.split(".")[1])
    for rpc, (req, resp) in METHODS.items():
        service.method.add(name=rpc, input_type=f".inference.{req}",
                           output_type=f".inference.{resp}")
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    get = message_factory.GetMessageClass
    return types.SimpleNamespace(**{
        name: get(pool.FindMessageTypeByName("inference." + name))
        for name in _MESSAGES if "." not in name})
