"""The data plane: what every protocol front end calls, whatever its wire format.

    plane = DataPlane(repository)
    with plane.model("digits") as servable:              # reference-counted version handle
        check = plane.shape_check(servable, "")           # refuse wrong shapes before decoding
        inputs = decode(wire_request, check)               # the front end's one job
        key, outputs = plane.infer(servable, "", inputs, deadline=deadline)

A front end (TF Serving's V1 REST in ``rest.py``, V1 gRPC in ``grpc_service.py``, and
any protocol added later) only translates its wire format into these calls and back;
model lookup, readiness, versions and labels (``ModelRepository``), input validation
against the signature (``validation``), batching, the runtime call, model errors and
metrics live here, once. Errors are ``ServingError``s with canonical codes; each front end
maps codes to its own statuses in one table.
"""

from tfdeploy.serving import inference
from tfdeploy.serving.status import ServingError


class DataPlane:
    """Model lookup, status, metadata and inference over a ``ModelRepository``.

    Args:
        repository: the ModelRepository (its ``metrics`` registry records requests).
    """

    def __init__(self, repository):
        self.repository = repository
        self.metrics = repository.metrics

    # -- models ------------------------------------------------------------------------------
    @property
    def model_names(self):
        return self.repository.model_names

    @property
    def batching(self):
        return self.repository.batching

    def status(self, name, version=None, label=None):
        """``VersionStatus`` list of a model (newest first); NOT_FOUND when unknown."""
        return self.repository.status(name, version, label)

    def ready(self, name, version=None, label=None):
        """True when the named version (latest by default) is AVAILABLE."""
        try:
            self.repository.get(name, version, label)
            return True
        except ServingError:
            return False

    def metadata(self, name, version=None, label=None):
        """The Servable a metadata request names (its ``version`` and ``signature_defs``)."""
        return self.repository.get(name, version, label)

    def model(self, name, version=None, label=None):
        """Context manager: a reference-counted handle on the version a request names."""
        return self.repository.serve(name, version, label)

    def recent_call_seconds(self, name):
        return self.repository.recent_call_seconds(name)

    # -- inference -----------------------------------------------------------------------------
    @staticmethod
    def shape_check(servable, signature_name):
        """``check(input_name, shape)`` raising INVALID_ARGUMENT for a shape the signature
        cannot take, for decoders to call before materialising a tensor (None when the
        servable's validation is off)."""
        return servable.validator(signature_name).check_shape if servable.validate else None

    @staticmethod
    def input_dtypes(servable, signature_name):
        return servable.input_dtypes(signature_name)

    @staticmethod
    def infer(servable, signature_name, inputs, output_filter=None, deadline=None):
        """Validate ``inputs`` against the signature, run it (batched when batching is on);
        ``(signature_key, {output: ndarray})``."""
        return servable.run(signature_name, inputs, output_filter=output_filter,
                            deadline=deadline)

    @staticmethod
    def classify(servable, signature_name, serialized, deadline=None):
        return inference.classify(servable, signature_name, serialized, deadline)

    @staticmethod
    def regress(servable, signature_name, serialized, deadline=None):
        return inference.regress(servable, signature_name, serialized, deadline)

    def multi_inference(self, tasks, serialized, version=None, label=None, deadline=None):
        """Run several classify/regress ``tasks`` ``[(model, signature, method)]`` of one model
        on the same examples; ``(version, [(method, key, results)])``."""
        name = inference.check_multi_inference(tasks)
        out = []
        with self.model(name, version, label) as servable:
            for _, signature, method in tasks:
                run = inference.classify if method == inference.CLASSIFY_METHOD \
                    else inference.regress
                key, results = run(servable, signature, serialized, deadline)
                out.append((method, key, results))
        return servable.version, out

    # -- metrics -------------------------------------------------------------------------------
    def record(self, name, api, protocol, code, seconds):
        """Count one finished request (the model label only for a model that exists)."""
        model = name if name in self.repository.model_names else ""
        self.metrics.request_done(model, api, protocol, code, seconds)
