"""Compression history survives save/load: a reloaded pruned+clustered model's card lists both."""

import json

import tfdeploy as td

C = td.compress


def test_saved_then_loaded_pruned_clustered_model_card_lists_both_steps(
        tmp_path, trained_model, train_ds):
    data = train_ds.take(4)
    pruned = C.prune(trained_model, 0.5, "constant", epochs=1, steps_per_epoch=4)
    pruned.compile("adam", "sparse_categorical_crossentropy")
    pruned.fit(data, epochs=1, verbose=0, callbacks=C.callbacks(pruned))
    clustered = C.cluster(C.strip(pruned), 8)
    clustered.compile("adam", "sparse_categorical_crossentropy")
    clustered.fit(data, epochs=1, verbose=0)
    model = C.strip(clustered)
    for name in ("model.keras", "model.h5"):
        path = str(tmp_path / name)
        td.model_io.save_model(model, path)
        loaded = td.model_io.load_model(path)
        if name == "model.keras":  # the card an export writes beside the artifact
            tfl = td.export.tflite(loaded, str(tmp_path / f"{name}.tflite"), model_card={})
            card = json.load(open(td.export.model_card.card_path(tfl)))
        else:  # the same card builder, without a second TFLite conversion
            card = td.export.model_card.build(loaded)
        steps = [s["step"] for s in card["compression"]]
        assert steps[:2] == ["pruned", "clustered"], (name, steps)
        assert card["compression"][-1]["kernel_sparsity"] >= 0.3  # zeros kept through clustering
