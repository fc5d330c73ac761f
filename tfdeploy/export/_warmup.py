"""TF Serving warmup requests: ``assets.extra/tf_serving_warmup_requests``.

TF Serving replays these ``PredictionLog`` records (a TFRecord file) against a
new version before serving it, so the first real request does not pay for
graph initialisation.
"""

import itertools

import numpy as np

from tfdeploy._keras import tf
from tfdeploy.errors import ExportError, MissingDependencyError
from tfdeploy.runtime.formats import MAX_WARMUP_RECORDS as MAX_RECORDS, WARMUP_FILE  # noqa: F401


def _apis():
    try:
        from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2
    except ImportError as exc:
        raise MissingDependencyError(
            "Writing TF Serving warmup requests needs tensorflow-serving-api; "
            "`pip install tensorflow-serving-api` or pass warmup_data=None.") from exc
    return model_pb2, predict_pb2, prediction_log_pb2


def samples(data, num):
    """Take ``num`` single inputs from a numpy array or ``(images, labels)`` dataset."""
    if int(num) <= 0:
        raise ExportError(f"num_warmup must be positive, received {num!r}.")
    num = min(int(num), MAX_RECORDS)
    if isinstance(data, tf.data.Dataset):
        rows = []
        for item in data:
            batch = item[0] if isinstance(item, (tuple, list)) else item
            rows.extend(np.asarray(batch))
            if len(rows) >= num:
                break
        arr = np.asarray(rows[:num], dtype=np.float32)
    else:
        arr = np.asarray(data, dtype=np.float32)[:num]
    if not len(arr):
        raise ExportError("warmup_data yielded no samples.")
    return arr


def _request(predict_pb2, model_pb2, name, signature, inputs):
    request = predict_pb2.PredictRequest(
        model_spec=model_pb2.ModelSpec(name=name, signature_name=signature))
    for key, value in inputs.items():
        request.inputs[key].CopyFrom(tf.make_tensor_proto(value))
    return request


def write(path, warmup, model_name, bytes_signature=False):
    """Write one ``serving_default`` request per sample (and ``serving_bytes`` as PNG).

    At most `MAX_RECORDS` records in all (TF Serving refuses more).
    """
    model_pb2, predict_pb2, prediction_log_pb2 = _apis()
    warmup = warmup[:MAX_RECORDS // (2 if bytes_signature else 1)]
    with tf.io.TFRecordWriter(path) as writer:
        for sample in warmup:
            requests = [_request(predict_pb2, model_pb2, model_name, "serving_default",
                                 {"images": sample[None].astype(np.float32)})]
            if bytes_signature:
                pixels = np.clip(np.round(sample), 0, 255).astype(np.uint8)
                png = tf.io.encode_png(pixels).numpy()
                requests.append(_request(predict_pb2, model_pb2, model_name, "serving_bytes",
                                         {"image_bytes": np.array([png], dtype=object)}))
            for request in requests:
                log = prediction_log_pb2.PredictionLog(
                    predict_log=prediction_log_pb2.PredictLog(request=request))
                writer.write(log.SerializeToString())


def read(path, limit=None):
    """Parse a warmup file into ``PredictionLog`` protos (raises on a malformed record)."""
    _, _, prediction_log_pb2 = _apis()
    logs = []
    for raw in itertools.islice(tf.data.TFRecordDataset(path).as_numpy_iterator(), limit):
        log = prediction_log_pb2.PredictionLog()
        log.ParseFromString(raw)
        logs.append(log)
    return logs
