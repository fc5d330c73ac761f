"""Search compression plans under an accuracy budget with keras-tuner.

    result = tfdeploy.tune.search(model, train_ds, (x, y), budget=1.0, objective="size")
    result.export("saved_models/tuned", x, y)

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
