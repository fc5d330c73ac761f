"""How close an exported artifact must stay to the model it came from, by precision.

Shared by ``verify`` (reports) and ``serving`` (``--runtime auto`` verifies each artifact
against its SavedModel before serving it): one table, on the ground floor.

- ``atol``: largest absolute difference of any float output (None: not checked, int8);
- ``min_agreement``: share of examples whose top class must agree;
- ``max_accuracy_drop``: accuracy an artifact may lose against its reference (reports).
"""

TOLERANCES = {
    "float32": {"atol": 1e-4, "min_agreement": 0.99, "max_accuracy_drop": 0.01},
    "float16": {"atol": 5e-3, "min_agreement": 0.98, "max_accuracy_drop": 0.01},
    "int8": {"atol": None, "min_agreement": 0.95, "max_accuracy_drop": 0.03},
}
