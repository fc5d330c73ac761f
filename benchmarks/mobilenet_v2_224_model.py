"""Build the serving benchmark's MobileNetV2 1.0 @ 224: the mobilenet recipe's model, trained here.

    python benchmarks/mobilenet_v2_224_model.py --out /tmp/i21-model [--ready /tmp/i21-model/READY]

The mobilenet recipe's offline procedure (``tfdeploy.recipes.mobilenet_transfer``; no ImageNet
weights are reachable here): the bundled digits (``td.data.write_digits``) upscaled to 224x224
and read as RGB (three equal channels, so the input is the ImageNet shape the issue's timings
are for; the recipe reads ``--data`` images the same way); a MobileNetV2 (alpha 1.0) base
pretrained from scratch on classes 0-4 (``pretrain_base``) and saved to a file; the transfer
model (``train_classifier``: that file loaded by path, frozen base and new 5-class head, then
fine-tuned from half way) trained on a stratified ``--label-fraction`` of the 5-9 training
images; the test images of 5-9 (never read in training) score it. The same seed-0 procedure
and epochs as ``bench_mobilenet.py --configs 1.0:224`` (pretrain 4, transfer 14, 30 % of the
labels), which scored 89.4 % in LiteRT there.

Writes under ``--out``:

- ``mobilenet_v2/1/``: ``td.export.saved_model`` with the artifacts ``--runtime auto`` picks
  from (float and int8 TFLite, float and int8 ONNX; int8 calibrated on the training images),
  warmup records from the training images, the verification set ``auto`` checks them on (the
  5-9 train images outside the label fraction: a validation split, never the test split),
  class labels "5".."9", and a model card naming this procedure;
- ``test/5`` .. ``test/9``: the test split as PNG class folders (labels 0-4 in folder order,
  the model's class indices), for ``bench_serving.py --accuracy_data``;
- ``model.json``: the procedure, its arguments, the Keras accuracy on the test split, the
  in-process accuracy of every artifact, and the seconds each step took.

``--ready FILE`` gets the version directory's path as soon as it exists.
"""

import argparse
import json
import os
import shutil
import sys
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ARTIFACTS = ["tflite_float32", "tflite_int8", "onnx", "onnx_int8"]


def _log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] mobilenet_v2_224_model: {msg}", file=sys.stderr,
          flush=True)


def load_task(digits, side, label_fraction, seed=0):
    """The recipe's digits transfer task (``digits_task``), read as RGB at ``side``."""
    import tfdeploy as td
    from tfdeploy.recipes import mobilenet_transfer as mt

    train = td.data.image_dataset(os.path.join(digits, "train"), image_size=(side, side),
                                  color_mode="rgb")
    test = td.data.image_dataset(os.path.join(digits, "test"), image_size=(side, side),
                                 color_mode="rgb")
    names = list(train.class_names)
    x, y = td.data.to_numpy(train)
    xt, yt = td.data.to_numpy(test)
    xs, ys = mt._subset(x, y, names, mt.TARGET_CLASSES)
    train = mt._fraction(xs, ys, label_fraction, seed)
    # the train images of 5-9 the transfer model never sees: a validation split
    seen = {a.tobytes() for a in train[0]}
    held = np.array([a.tobytes() not in seen for a in xs])
    return {"pretrain": mt._subset(x, y, names, mt.PRETRAIN_CLASSES),
            "train": train, "validation": (xs[held], ys[held]),
            "test": mt._subset(xt, yt, names, mt.TARGET_CLASSES),
            "class_names": list(mt.TARGET_CLASSES)}


def _accuracy(predict, x, y, batch=32):
    out = [np.argmax(predict(x[i:i + batch]), -1) for i in range(0, len(x), batch)]
    return round(float(np.mean(np.concatenate(out) == y)), 4)


def artifact_accuracies(version_dir, x, y):
    """Top-1 accuracy of every runtime/artifact of the version, in process."""
    from tfdeploy.serving.runtimes import candidates, load_runtime

    out = {}
    for name, entry in candidates(version_dir):
        rt = load_runtime(name, version_dir, entry, num_threads=2)
        try:
            out[f"{name}/{entry.get('name') or 'saved_model'}"] = _accuracy(
                lambda b: rt.call("serving_default", {"images": b})["probabilities"], x, y)
        finally:
            rt.close()
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--ready", default=None,
                   help="file to write the version directory's path into once it exists")
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--alpha", type=float, default=1.0)
    p.add_argument("--pretrain-epochs", type=int, default=4)
    p.add_argument("--epochs", type=int, default=14)
    p.add_argument("--label-fraction", type=float, default=0.3)
    p.add_argument("--num-warmup", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    sys.path.insert(0, REPO)
    import tfdeploy as td
    from tfdeploy.recipes import mobilenet_transfer as mt

    t0 = time.perf_counter()
    seconds = {}
    os.makedirs(args.out, exist_ok=True)
    digits = td.data.write_digits(os.path.join(args.out, "digits"))
    side = args.image_size
    task = load_task(digits, side, args.label_fraction, args.seed)
    seconds["data"] = round(time.perf_counter() - t0, 1)
    (x, y), (xt, yt), names = task["train"], task["test"], task["class_names"]
    _log(f"pretrain {len(task['pretrain'][0])} images of 0-4, transfer {len(x)} of 5-9, "
         f"test {len(xt)}")
    weights = os.path.join(args.out, f"base_{args.alpha}_{side}.h5")
    t = time.perf_counter()
    mt.pretrain_base(*task["pretrain"], weights, "mobilenet_v2", args.alpha,
                     args.pretrain_epochs, args.seed, verbose=2)
    seconds["pretrain"] = round(time.perf_counter() - t, 1)
    _log(f"base pretrained ({seconds['pretrain']} s)")
    t = time.perf_counter()
    model = mt.train_classifier(x, y, len(names), weights, "mobilenet_v2", args.alpha,
                                args.epochs, seed=args.seed, verbose=2)
    seconds["transfer"] = round(time.perf_counter() - t, 1)
    keras_accuracy = _accuracy(lambda b: model(b, training=False).numpy(), xt, yt)
    _log(f"transfer model trained ({seconds['transfer']} s): Keras test accuracy "
         f"{keras_accuracy}")

    procedure = {
        "script": "benchmarks/mobilenet_v2_224_model.py",
        "argv": sys.argv[1:] if argv is None else list(argv),
        "recipe": "tfdeploy.recipes.mobilenet_transfer (offline digits transfer): "
                  "pretrain_base on digits 0-4, train_classifier (base loaded by path, frozen, "
                  "new head, fine-tuned from half way) on 5-9",
        "architecture": f"build_mobilenet mobilenet_v2 alpha {args.alpha}, "
                        f"{side}x{side}x3 (digits read as RGB), {len(names)} classes",
        "data": "bundled digits (sklearn 8x8, td.data.write_digits, test_fraction 0.2, "
                f"seed 0) upscaled to {side}x{side}",
        "pretrain_images": int(len(task["pretrain"][0])), "train_images": int(len(x)),
        "test_images": int(len(xt)), "pretrain_epochs": args.pretrain_epochs,
        "epochs": args.epochs, "label_fraction": args.label_fraction, "seed": args.seed,
        "keras_test_accuracy": keras_accuracy, "class_names": names}
    base = os.path.join(args.out, "mobilenet_v2")
    shutil.rmtree(base, ignore_errors=True)
    t = time.perf_counter()
    version = td.export.saved_model(
        model, base, version=1, class_names=names, image_bytes=False,
        warmup_data=x, num_warmup=args.num_warmup, artifacts=ARTIFACTS,
        representative_data=x, verification_data=task["validation"][0],
        model_card={"source": procedure})
    seconds["export"] = round(time.perf_counter() - t, 1)
    _log(f"exported {version} ({seconds['export']} s)")
    if args.ready:
        os.makedirs(os.path.dirname(os.path.abspath(args.ready)), exist_ok=True)
        with open(args.ready + ".tmp", "w") as f:
            f.write(os.path.abspath(version) + "\n")
        os.replace(args.ready + ".tmp", args.ready)

    test_dir = os.path.join(args.out, "test")
    shutil.rmtree(test_dir, ignore_errors=True)
    for c in names:
        shutil.copytree(os.path.join(digits, "test", c), os.path.join(test_dir, c))
    t = time.perf_counter()
    procedure["artifact_test_accuracy_in_process"] = artifact_accuracies(version, xt, yt)
    seconds["artifact_accuracy"] = round(time.perf_counter() - t, 1)
    seconds["total"] = round(time.perf_counter() - t0, 1)
    procedure.update(version_dir=os.path.abspath(version), test_dir=os.path.abspath(test_dir),
                     seconds=seconds, load_average_end=os.getloadavg())
    with open(os.path.join(args.out, "model.json"), "w") as f:
        json.dump(procedure, f, indent=1)
    print(json.dumps(procedure, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
