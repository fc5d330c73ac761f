"""Warmup records: ``assets.extra/tf_serving_warmup_requests`` (TFRecord of PredictionLog).

TF Serving replays these requests against a version while loading it, before
the version becomes AVAILABLE, so the first real request does not pay for
tracing and memory allocation. ``write_warmup_requests`` writes such a file.
"""

import os

from tfdeploy.runtime.formats import MAX_WARMUP_RECORDS as MAX_RECORDS, WARMUP_PATH
from tfdeploy.serving import inference
from tfdeploy.serving.status import ServingError


def write_warmup_requests(version_dir, requests):
    """Write a warmup file into a SavedModel version directory.

    Args:
        version_dir: the version directory (holding saved_model.pb).
        requests: PredictRequest, ClassificationRequest or RegressionRequest messages.

    Returns:
        The path of the file written.
    """
    import tensorflow as tf
    from tensorflow_serving.apis import (classification_pb2, predict_pb2, prediction_log_pb2,
                                         regression_pb2)

    path = os.path.join(version_dir, WARMUP_PATH)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with tf.io.TFRecordWriter(path) as writer:
        for request in requests:
            log = prediction_log_pb2.PredictionLog()
            if isinstance(request, predict_pb2.PredictRequest):
                log.predict_log.request.CopyFrom(request)
            elif isinstance(request, classification_pb2.ClassificationRequest):
                log.classify_log.request.CopyFrom(request)
            elif isinstance(request, regression_pb2.RegressionRequest):
                log.regress_log.request.CopyFrom(request)
            else:
                raise TypeError(f"Unsupported warmup request type {type(request).__name__}; "
                                "pass PredictRequest, ClassificationRequest or RegressionRequest.")
            writer.write(log.SerializeToString())
    return path


def read_logs(servable):
    """The version's warmup ``PredictionLog``s (empty without a warmup file).

    Raises:
        ServingError: the file is unreadable or holds more than ``MAX_RECORDS`` records.
    """
    import tensorflow as tf
    from tensorflow_serving.apis import prediction_log_pb2

    path = os.path.join(servable.path, WARMUP_PATH)
    if not os.path.isfile(path):
        return []
    try:
        records = list(tf.compat.v1.io.tf_record_iterator(path))
    except Exception as exc:  # noqa: BLE001
        raise ServingError("DATA_LOSS", f"Could not read warmup file {path}: {exc}") from exc
    if len(records) > MAX_RECORDS:
        raise ServingError("INVALID_ARGUMENT", f"Number of warmup records exceeds the maximum "
                                               f"({MAX_RECORDS}) at {path}")
    logs = []
    for raw in records:
        log = prediction_log_pb2.PredictionLog()
        log.ParseFromString(raw)
        logs.append(log)
    return logs


def predict_feeds(servable, logs, key="serving_default", limit=64):
    """The inputs of the warmup predict records ``logs`` (``read_logs``) for signature
    ``key``, checked against it (``[{input: ndarray}]``). ``--runtime auto`` verifies
    artifacts on them."""
    feeds = []
    for log in logs:
        if log.WhichOneof("log_type") != "predict_log":
            continue
        req = log.predict_log.request
        if (req.model_spec.signature_name or "serving_default") != key:
            continue
        inputs = {k: inference.tensor_to_ndarray(k, v) for k, v in req.inputs.items()}
        feeds.append(servable.validators[key].check(inputs))
        if len(feeds) >= limit:
            break
    return feeds


def replay(servable, logs=None):
    """Replay a version's warmup records (``logs``, or read from its file); return how many
    ran (0 when there is no file).

    Raises:
        ServingError: a record is malformed, unsupported, or fails to run.
    """
    count = 0
    for log in read_logs(servable) if logs is None else logs:
        kind = log.WhichOneof("log_type")
        if kind == "predict_log":
            req = log.predict_log.request
            inputs = {k: inference.tensor_to_ndarray(k, v) for k, v in req.inputs.items()}
            servable.run(req.model_spec.signature_name, inputs, list(req.output_filter) or None)
        elif kind == "classify_log":
            req = log.classify_log.request
            inference.classify(servable, req.model_spec.signature_name,
                               inference.serialized_examples(req.input))
        elif kind == "regress_log":
            req = log.regress_log.request
            inference.regress(servable, req.model_spec.signature_name,
                              inference.serialized_examples(req.input))
        else:
            raise ServingError("UNIMPLEMENTED", f"Unsupported log_type for warmup: {kind}")
        count += 1
    return count
