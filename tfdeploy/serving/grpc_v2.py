"""The Open Inference Protocol (KServe V2) over gRPC: ``inference.GRPCInferenceService``.

Served on the same port as TF Serving's services (``grpc_service.make_grpc_server``):
ServerLive, ServerReady, ModelReady, ServerMetadata, ModelMetadata and ModelInfer. Inputs
come from ``contents`` (typed repeated fields) or ``raw_input_contents`` (one raw buffer per
input, in input order: all inputs or none); outputs answer in ``raw_output_contents`` as
Triton answers (tritonclient and KServe's client read them), or in ``contents`` when the
request parameter ``raw_output`` is false (and every output has a ``contents`` field; FP16
has none). Lookup, validation, batching, the model call and
metrics are the DataPlane's; this module only translates.
"""

import numpy as np

from tfdeploy.serving import rest_v2, v2_tensors
from tfdeploy.serving.protos_v2 import METHODS, SERVICE, messages
from tfdeploy.serving.status import invalid

PROTOCOL = "GRPC_V2"

# datatype -> InferTensorContents field
_CONTENTS = {"BOOL": "bool_contents", "INT8": "int_contents", "INT16": "int_contents",
             "INT32": "int_contents", "INT64": "int64_contents", "UINT8": "uint_contents",
             "UINT16": "uint_contents", "UINT32": "uint_contents", "UINT64": "uint64_contents",
             "FP32": "fp32_contents", "FP64": "fp64_contents", "BYTES": "bytes_contents"}


def _param(params, key, kind, what):
    """A parameter's value (None when absent), checked to be of ``kind``."""
    if key not in params:
        return None
    p = params[key]
    which = p.WhichOneof("parameter_choice")
    if which != kind + "_param":
        raise invalid(f"{what}: parameter '{key}' must be a {kind}, got {which or 'nothing'}.")
    return getattr(p, which)


class InferenceServicer:
    """``inference.GRPCInferenceService`` over a DataPlane (``_Base`` from grpc_service
    supplies ``_call``: deadlines, error codes and metrics)."""

    def __init__(self, base):
        self.base, self.plane = base, base.plane
        self.m = messages()

    def _run(self, api, request, context, fn):
        name = getattr(request, "model_name", None) or getattr(request, "name", "")
        return self.base.call(api, name, PROTOCOL, context, lambda deadline: fn(request))

    def ServerLive(self, request, context):  # noqa: N802
        return self._run("ServerLive", request, context,
                         lambda r: self.m.ServerLiveResponse(live=True))

    def ServerReady(self, request, context):  # noqa: N802
        return self._run("ServerReady", request, context, lambda r: self.m.ServerReadyResponse(
            ready=rest_v2.server_ready(self.plane)))

    def ModelReady(self, request, context):  # noqa: N802
        def ready(r):
            name = _name(r.name)
            version = rest_v2.parse_model_version(self.plane, name, r.version)
            return self.m.ModelReadyResponse(ready=rest_v2.model_ready(self.plane, name, version))
        return self._run("ModelReady", request, context, ready)

    def ServerMetadata(self, request, context):  # noqa: N802
        meta = rest_v2.server_metadata()
        return self._run("ServerMetadata", request, context,
                         lambda r: self.m.ServerMetadataResponse(**meta))

    def ModelMetadata(self, request, context):  # noqa: N802
        def metadata(r):
            name = _name(r.name)
            name, versions, platform, inputs, outputs = rest_v2.model_metadata(
                self.plane, name, rest_v2.parse_model_version(self.plane, name, r.version))
            out = self.m.ModelMetadataResponse(name=name, versions=versions, platform=platform)
            for target, tensors in ((out.inputs, inputs), (out.outputs, outputs)):
                for n, d, s in tensors:
                    target.add(name=n, datatype=d, shape=s)
            return out
        return self._run("ModelMetadata", request, context, metadata)

    def ModelInfer(self, request, context):  # noqa: N802
        return self.base.call("ModelInfer", request.model_name, PROTOCOL, context,
                              lambda deadline: self._infer(request, deadline))

    def _infer(self, request, deadline):
        plane = self.plane
        name = _name(request.model_name)
        version = rest_v2.parse_model_version(plane, name, request.model_version)
        signature = _param(request.parameters, "signature_name", "string", "The request") or ""
        raw_output = _param(request.parameters, "raw_output", "bool", "The request")
        raw = list(request.raw_input_contents)
        if raw and len(raw) != len(request.inputs):
            raise invalid(f"raw_input_contents holds {len(raw)} buffers for "
                          f"{len(request.inputs)} inputs; send one per input, in input order "
                          "(or none, and the data in each input's contents).")
        if not request.inputs:
            raise invalid("The request has no inputs; send each input of the model's "
                          "signature (see ModelMetadata).")

        def read(tensor_name, datatype, shape, numel, source):
            index, tensor = source
            if raw:
                if tensor.HasField("contents"):
                    raise invalid(f"Input '{tensor_name}' has contents while the request uses "
                                  "raw_input_contents; use one or the other for all inputs.")
                return v2_tensors.from_raw(tensor_name, datatype, shape, numel, raw[index])
            field = _CONTENTS.get(datatype)
            if field is None:
                raise invalid(f"Input '{tensor_name}': {datatype} has no contents field; "
                              "send it in raw_input_contents.")
            values = getattr(tensor.contents, field)
            if len(values) != numel:
                raise invalid(f"Input '{tensor_name}': shape {list(shape)} holds {numel} "
                              f"elements but contents.{field} has {len(values)}.")
            if datatype == "BYTES":
                array = np.array(list(values), dtype=object)
            else:
                kind = v2_tensors.NUMPY[datatype]
                wide = np.asarray(values)   # int_contents: int32, uint_contents: uint32
                if datatype[0] in "IU" and wide.size:
                    info = np.iinfo(kind)
                    if wide.min() < info.min or wide.max() > info.max:
                        raise invalid(f"Input '{tensor_name}': a value in contents.{field} is "
                                      f"outside {datatype}'s range [{info.min}, {info.max}].")
                array = wide.astype(kind)
            return array.reshape(shape)

        with plane.model(name, version) as servable:
            key, sig = servable.signature(signature)
            wanted = rest_v2.output_names([o.name for o in request.outputs], sig)
            inputs = rest_v2.infer_inputs(plane, servable, signature, [
                (t.name, t.datatype, list(t.shape), (i, t))
                for i, t in enumerate(request.inputs)], read)
            _, outputs = plane.infer(servable, signature, inputs, wanted, deadline)
        response = self.m.ModelInferResponse(model_name=name, model_version=str(servable.version),
                                             id=request.id)
        arrays = {k: np.asarray(outputs[k]) for k in wanted}
        datatypes = {k: v2_tensors.datatype_of_array(a) for k, a in arrays.items()}
        # Raw buffers are all outputs' or none (the protocol's rule): typed contents only
        # when asked for and every output's datatype has a contents field (FP16 has none).
        typed = raw_output is False and all(d in _CONTENTS for d in datatypes.values())
        for out_name in wanted:
            array, datatype = arrays[out_name], datatypes[out_name]
            tensor = response.outputs.add(name=out_name, datatype=datatype, shape=array.shape)
            if typed:
                flat = array.reshape(-1)
                getattr(tensor.contents, _CONTENTS[datatype]).extend(
                    list(flat) if datatype == "BYTES" else flat.tolist())
            else:
                response.raw_output_contents.append(v2_tensors.to_raw(array))
        return response


def _name(name):
    if not name:
        raise invalid("Missing model name: set the request's name (model_name for ModelInfer).")
    return name


def add_inference_service(server, base, add_service):
    """Register ``inference.GRPCInferenceService`` on ``server`` with ``add_service``
    (grpc_service's registration: an unparsable request is INVALID_ARGUMENT)."""
    m = messages()
    add_service(server, SERVICE, InferenceServicer(base), {
        rpc: (getattr(m, req), getattr(m, resp)) for rpc, (req, resp) in METHODS.items()})
