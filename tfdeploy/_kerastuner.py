"""keras-tuner internals tfdeploy relies on, gathered in one place.

Everything here reaches past keras-tuner's public API: the chief's gRPC servicer and
its stop test (``keras_tuner.src.distribute.oracle_chief``), the service protos
(``keras_tuner.src.protos``) and the oracle's private duplicate check
(``Oracle._duplicate``). It was read against the keras-tuner versions in
`CHECKED_VERSIONS` (1.4.7 and 1.4.8 hold the same code there); `check_version` warns
once when another one is installed, and ``tests/test_house.py`` fails, so the next
upgrade starts by re-reading this file. Binding keras-tuner to Keras 2 is Keras
selection: `tfdeploy._keras.keras_tuner`.
"""

import importlib
import os
import time
import warnings

from tfdeploy._keras import keras_tuner

#: keras-tuner versions whose internals this module was checked against: [low, high).
CHECKED_VERSIONS = ((1, 4, 7), (1, 4, 9))
_checked = []


def version():
    """The installed keras-tuner version as a tuple of ints."""
    return tuple(int(p) for p in keras_tuner().__version__.split(".")[:3] if p.isdigit())


def check_version():
    """True when the installed keras-tuner is in `CHECKED_VERSIONS`, else warn once and False."""
    if not _checked:
        low, high = CHECKED_VERSIONS
        ok = low <= version() < high
        if not ok:
            warnings.warn(
                f"keras-tuner {keras_tuner().__version__} is installed; tfdeploy's use of its "
                f"internals was checked against versions {low} to {high} (exclusive). "
                "Seeded oracles and the distributed chief may misbehave.", RuntimeWarning,
                stacklevel=3)
        _checked.append(ok)
    return _checked[0]


def _internal(name):
    keras_tuner()  # bound to Keras 2 before its submodules load
    return importlib.import_module(f"keras_tuner.src.{name}")


def is_duplicate(oracle, values):
    """Whether ``oracle`` has tried the hyperparameter ``values`` before (``_duplicate``)."""
    check_version()
    return oracle._duplicate(values)


def serve_oracle(oracle, poll_seconds=0.2):
    """Serve ``oracle`` to the workers over gRPC until every worker has stopped.

    Listens on ``KERASTUNER_ORACLE_IP``:``KERASTUNER_ORACLE_PORT``. keras-tuner's own
    chief loop (``oracle_chief.start_server``) checks every 20 s whether the last
    worker has finished once the first one stopped, so a search whose workers finish
    apart idles up to 20 s; this is the same servicer and stop condition, polled
    every ``poll_seconds``, and it shuts the server down (the chief process goes on
    to write the trials and export).
    """
    from concurrent import futures

    import grpc

    check_version()
    chief = _internal("distribute.oracle_chief")
    protos = _internal("protos")
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=1))
    servicer = chief.OracleServicer(oracle)
    protos.get_service_grpc().add_OracleServicer_to_server(servicer, server)
    server.add_insecure_port(f"{os.environ['KERASTUNER_ORACLE_IP']}:"
                             f"{os.environ['KERASTUNER_ORACLE_PORT']}")
    server.start()
    try:
        while not (servicer.stop_triggered and chief.exit_chief(oracle)):
            time.sleep(poll_seconds)
    finally:
        server.stop(grace=2).wait()


def internals():
    """Every internal this module reaches, resolved on the installed keras-tuner (the house
    test calls it): ``{name: object}``."""
    chief = _internal("distribute.oracle_chief")
    protos = _internal("protos")
    return {"oracle_chief.OracleServicer": chief.OracleServicer,
            "oracle_chief.exit_chief": chief.exit_chief,
            "protos.add_OracleServicer_to_server":
                protos.get_service_grpc().add_OracleServicer_to_server,
            "Oracle._duplicate": keras_tuner().Oracle._duplicate}
