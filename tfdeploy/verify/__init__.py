"""Verify: parity, accuracy and per-class report of every artifact in its own runtime;
latency/throughput/memory benchmark; FLOPs; memory planning; weight inspection."""

from tfdeploy.verify.benchmark import (KerasTarget, bench, format_table, interleaved_latency,
                                       matmul_peak_flops, speedup)
from tfdeploy.verify.evaluate import accuracy, gzip_bytes, latency_ms, path_bytes
from tfdeploy.verify.flops import flops as count_flops
from tfdeploy.verify.memory import (MemoryBudgetError, MemoryEstimate, available_memory,
                                    check_memory, estimate)
from tfdeploy.verify.report import (TOLERANCES, classification_report,
                                    format_classification_report, format_results, verify,
                                    verify_all)
from tfdeploy.verify.baselines import (bm25_scores, cooccurrence_scores, popularity_scores,
                                       tfidf_scores, topic_count_scores)
from tfdeploy.verify.precision import op_precisions, precision_counts, precision_map
from tfdeploy.verify.retrieval import random_recall, rank_metrics, recall_at_k, top_k
from tfdeploy.verify.tflite_weights import (op_dtypes, operators, weight_summary,
                                            weight_tensors)

__all__ = ["KerasTarget", "accuracy", "latency_ms", "path_bytes", "gzip_bytes", "weight_summary",
           "weight_tensors", "operators", "op_dtypes", "verify", "verify_all",
           "classification_report",
           "format_classification_report", "format_results", "TOLERANCES", "bench",
           "format_table", "interleaved_latency",
           "speedup", "matmul_peak_flops", "count_flops", "estimate",
           "check_memory", "MemoryEstimate", "MemoryBudgetError", "available_memory",
           "recall_at_k", "random_recall", "top_k", "rank_metrics", "tfidf_scores",
           "bm25_scores", "popularity_scores", "topic_count_scores", "cooccurrence_scores",
           "precision_map", "precision_counts", "op_precisions"]
