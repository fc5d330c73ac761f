"""Verify: accuracy, latency, size of every artifact in its own runtime; weight inspection."""

from tfdeploy.verify.evaluate import accuracy, gzip_bytes, latency_ms, path_bytes
from tfdeploy.verify.tflite_weights import weight_summary, weight_tensors

__all__ = ["accuracy", "latency_ms", "path_bytes", "gzip_bytes", "weight_summary",
           "weight_tensors"]
