"""Protos TF Serving reads that tensorflow-serving-api does not ship.

``BatchingParameters`` (session_bundle_config.proto) and ``MonitoringConfig``
(monitoring_config.proto) are declared here with the same package, names,
field numbers and types as TF Serving's own, in a private descriptor pool, so
their text format is exactly the one ``--batching_parameters_file`` and
``--monitoring_config_file`` take. ``ModelServerConfig`` comes from
tensorflow-serving-api.
"""

import functools

from google.protobuf import descriptor_pb2, descriptor_pool, text_format, wrappers_pb2

_F = descriptor_pb2.FieldDescriptorProto


def _field(msg, name, number, ftype, type_name=None, repeated=False):
    f = msg.field.add(name=name, number=number, type=ftype,
                      label=_F.LABEL_REPEATED if repeated else _F.LABEL_OPTIONAL)
    if type_name:
        f.type_name = type_name


@functools.lru_cache(maxsize=None)
def _classes():
    pool = descriptor_pool.DescriptorPool()
    pool.AddSerializedFile(wrappers_pb2.DESCRIPTOR.serialized_pb)

    batching = descriptor_pb2.FileDescriptorProto(
        name="tensorflow_serving/servables/tensorflow/session_bundle_config.proto",
        package="tensorflow.serving", syntax="proto3",
        dependency=["google/protobuf/wrappers.proto"])
    m = batching.message_type.add(name="BatchingParameters")
    i64, string = ".google.protobuf.Int64Value", ".google.protobuf.StringValue"
    _field(m, "max_batch_size", 1, _F.TYPE_MESSAGE, i64)
    _field(m, "batch_timeout_micros", 2, _F.TYPE_MESSAGE, i64)
    _field(m, "max_enqueued_batches", 3, _F.TYPE_MESSAGE, i64)
    _field(m, "num_batch_threads", 4, _F.TYPE_MESSAGE, i64)
    _field(m, "thread_pool_name", 5, _F.TYPE_MESSAGE, string)
    _field(m, "allowed_batch_sizes", 6, _F.TYPE_INT64, repeated=True)
    _field(m, "pad_variable_length_inputs", 7, _F.TYPE_BOOL)
    pool.Add(batching)

    monitoring = descriptor_pb2.FileDescriptorProto(
        name="tensorflow_serving/config/monitoring_config.proto",
        package="tensorflow.serving", syntax="proto3")
    p = monitoring.message_type.add(name="PrometheusConfig")
    _field(p, "enable", 1, _F.TYPE_BOOL)
    _field(p, "path", 2, _F.TYPE_STRING)
    mc = monitoring.message_type.add(name="MonitoringConfig")
    _field(mc, "prometheus_config", 1, _F.TYPE_MESSAGE, ".tensorflow.serving.PrometheusConfig")
    pool.Add(monitoring)

    from google.protobuf import message_factory

    get = message_factory.GetMessageClass
    return (get(pool.FindMessageTypeByName("tensorflow.serving.BatchingParameters")),
            get(pool.FindMessageTypeByName("tensorflow.serving.MonitoringConfig")))


def BatchingParameters(**kwargs):  # noqa: N802  (a message constructor)
    """Return a new ``tensorflow.serving.BatchingParameters`` message."""
    return _classes()[0](**kwargs)


def MonitoringConfig(**kwargs):  # noqa: N802
    """Return a new ``tensorflow.serving.MonitoringConfig`` message."""
    return _classes()[1](**kwargs)


def ModelServerConfig(**kwargs):  # noqa: N802
    """Return a new ``tensorflow.serving.ModelServerConfig`` message (tensorflow-serving-api)."""
    from tensorflow_serving.config import model_server_config_pb2

    return model_server_config_pb2.ModelServerConfig(**kwargs)


def parse_text(text, message, what="config"):
    """Parse protobuf text format into ``message``; raise ValueError naming ``what``."""
    try:
        text_format.Parse(text, message)
    except text_format.ParseError as exc:
        raise ValueError(f"Could not parse {what} as text-format "
                         f"{message.DESCRIPTOR.full_name}: {exc}") from exc
    return message


def to_text(message):
    return text_format.MessageToString(message)
