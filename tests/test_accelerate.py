"""Acceleration keywords: XLA in the exported serving function, tf.data switches, the input
pipeline's share of step time."""

import os

import numpy as np

import tfdeploy as td


def test_saved_model_jit_compile_serves_the_same_predictions(tmp_path, trained_model,
                                                             test_arrays):
    x, _ = test_arrays
    path = td.export.saved_model(trained_model, str(tmp_path / "xla"), jit_compile=True,
                                 class_names=[str(i) for i in range(10)])
    with open(os.path.join(path, "saved_model.pb"), "rb") as f:
        assert b"_XlaMustCompile" in f.read()  # the network is XLA-compiled in the artifact
    runner = td.runtime.load(path)
    got = runner.predict(x[:16])
    want = trained_model.predict(x[:16], verbose=0)
    np.testing.assert_allclose(got, want, atol=1e-4)


def _stages(ds):
    """The transformations of a tf.data pipeline, by class name (Prefetch, Cache, ...)."""
    names = set()
    while ds is not None:
        names.add(type(ds).__name__.strip("_").replace("Dataset", ""))
        ds = getattr(ds, "_input_dataset", None)
    return names


def test_image_dataset_switches_and_input_share(digits_dir, trained_model):
    train = os.path.join(digits_dir, "train")
    plain = td.data.image_dataset(train, cache=False, prefetch=False, parallel=False)
    tuned = td.data.image_dataset(train)
    assert not {"Prefetch", "ParallelMap", "Cache"} & _stages(plain)
    assert {"Prefetch", "ParallelMap", "Cache"} <= _stages(tuned)
    share = td.data.input_pipeline_share(trained_model, plain, steps=4)
    assert share["steps"] == 4
    assert 0.0 <= share["share"] < 1.0
    assert share["fit_seconds"] > 0 and share["compute_seconds"] > 0
    before = trained_model.get_weights()[0].copy()
    td.data.input_pipeline_share(trained_model, tuned, steps=2)
    np.testing.assert_array_equal(trained_model.get_weights()[0], before)  # a copy trained
