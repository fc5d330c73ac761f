"""Request errors carrying a gRPC status code, mapped to TF Serving's HTTP codes."""

from tfdeploy.errors import TfdeployError

# TF Serving's mapping from canonical status codes to HTTP (util/net_http status mapping).
HTTP_STATUS = {
    "OK": 200, "CANCELLED": 499, "UNKNOWN": 500, "INVALID_ARGUMENT": 400,
    "DEADLINE_EXCEEDED": 504, "NOT_FOUND": 404, "ALREADY_EXISTS": 409,
    "PERMISSION_DENIED": 403, "RESOURCE_EXHAUSTED": 429, "FAILED_PRECONDITION": 400,
    "ABORTED": 409, "OUT_OF_RANGE": 400, "UNIMPLEMENTED": 501, "INTERNAL": 500,
    "UNAVAILABLE": 503, "DATA_LOSS": 500, "UNAUTHENTICATED": 401,
}


class ServingError(TfdeployError, ValueError):
    """A request failed with a canonical status ``code`` (e.g. "NOT_FOUND").

    ``http_status`` is the HTTP code TF Serving's REST API answers with.
    """

    def __init__(self, code, message):
        if code not in HTTP_STATUS:
            raise ValueError(f"Unknown status code {code!r}; expected one of "
                             f"{sorted(HTTP_STATUS)}.")
        super().__init__(message)
        self.code = code
        self.message = message

    @property
    def http_status(self):
        return HTTP_STATUS[self.code]

    def __repr__(self):
        return f"ServingError({self.code!r}, {self.message!r})"


def invalid(message):
    return ServingError("INVALID_ARGUMENT", message)


def not_found(message):
    return ServingError("NOT_FOUND", message)


class ServingConfigError(TfdeployError, ValueError):
    """A serving flag or config file is invalid (the message says how to fix it)."""


def deadline_exceeded(what="the request"):
    return ServingError("DEADLINE_EXCEEDED", f"Deadline Exceeded: {what} did not finish in time")
