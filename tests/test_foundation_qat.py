"""QAT wrapper: calibration of activation ranges, input left untouched."""

import numpy as np

import tfdeploy as td


def _var(model, suffix):
    return next(w for w in model.weights if w.name.endswith(suffix)).numpy()


def test_calibrated_ranges_match_float_activations(trained_model, test_arrays):
    x, y = test_arrays
    before = [w.copy() for w in trained_model.get_weights()]
    plain = td.compress.quantize(trained_model, preserve=None)
    calibrated = td.compress.quantize(trained_model, preserve=None, calibration_data=x)
    assert calibrated._tfdeploy_qat["calibrated"] > 0
    # tfmot's initial range is [-6, 6]; calibrated ranges are the float model's observed ones
    assert _var(plain, "quant_dense1/post_activation_max:0") == 6.0
    probe = td.keras.Model(trained_model.inputs, trained_model.get_layer("dense1").output)
    observed = float(probe(x[:256]).numpy().max())  # 8 batches of 32 are observed
    assert np.isclose(_var(calibrated, "quant_dense1/post_activation_max:0"), observed, rtol=1e-5)
    float_acc = td.verify.accuracy(trained_model, x, y)
    # within the int8 accuracy tolerance every artifact is held to (one fixed 0.02 flaked at
    # 0.023 in a suite run: 8-bit fake-quant of every layer with untrained ranges)
    drop = td.verify.TOLERANCES["int8"]["max_accuracy_drop"]
    assert td.verify.accuracy(calibrated, x, y) >= float_acc - drop
    # the input model is untouched by both calls
    for a, b in zip(before, trained_model.get_weights()):
        np.testing.assert_array_equal(a, b)
