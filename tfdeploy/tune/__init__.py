"""Search compression plans under an accuracy budget with keras-tuner.

    result = tfdeploy.tune.search(model, train_ds, (x_val, y_val), budget=1.0,
                                  objective="size", test_data=(x_test, y_test))
    result.export("saved_models/tuned")

The search chooses on the validation split (held out of the training data),
fine-tunes and calibrates on ``train_ds``, and reads the test split once, for
the chosen artifact (see `search`).

See `search` (single process, resumable, Bayesian / Hyperband / random) and
`DEFAULT_SPACE` (the compression choices searched).
"""

from tfdeploy.tune.search import (OBJECTIVES, TUNERS, CompressionTuner, TuneResult, collect,
                                  role, search)
from tfdeploy.tune.space import (DEFAULT_SPACE, INITIAL_POINTS, plan, resolve_points,
                                 resolve_space, technique)

__all__ = ["search", "TuneResult", "CompressionTuner", "DEFAULT_SPACE", "INITIAL_POINTS",
           "resolve_space", "resolve_points", "plan",
           "technique", "collect", "role", "TUNERS", "OBJECTIVES"]
