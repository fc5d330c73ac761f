"""TensorBoard output beyond scalars: figures as images, the comparison as a text table,
and per-layer sparsity read back from the event files `SparsityMonitor` wrote."""

import glob
import os

from tfdeploy._keras import tf


def log_images(log_dir, figures, step=0):
    """Write each PNG in ``figures`` (``{name: PNG bytes}``) as a TensorBoard image."""
    writer = tf.summary.create_file_writer(log_dir)
    with writer.as_default(step=step):
        for name, png in figures.items():
            image = tf.image.decode_png(png, channels=4)[None]
            tf.summary.image(name, image, step=step)
    writer.close()


def log_text(log_dir, name, markdown, step=0):
    """Write a Markdown text summary (TensorBoard's Text tab renders tables)."""
    writer = tf.summary.create_file_writer(log_dir)
    with writer.as_default(step=step):
        tf.summary.text(name, markdown)
    writer.close()


def read_sparsity(log_dirs):
    """Per-layer sparsity per epoch from `SparsityMonitor` event files.

    Args:
        log_dirs: ``{stage_label: directory}`` in order; each directory is the
            ``log_dir`` given to `tfdeploy.compress.callbacks` (the scalars live in
            ``<dir>/sparsity``).

    Returns:
        ``{"epochs": ["prune 1", ..., "qat 2"], "layers": {layer: [value or None]}}``
        (``overall`` left out).
    """
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    epochs, layers = [], {}
    for label, log_dir in log_dirs.items():
        path = os.path.join(log_dir, "sparsity")
        if not glob.glob(os.path.join(path, "events.out.tfevents.*")):
            continue
        acc = EventAccumulator(path, size_guidance={"tensors": 0, "scalars": 0})
        acc.Reload()
        series = {}
        for tag in acc.Tags().get("tensors", []):
            if tag.startswith("sparsity/") and tag != "sparsity/overall":
                series[tag[len("sparsity/"):]] = {
                    e.step: float(tf.make_ndarray(e.tensor_proto)) for e in acc.Tensors(tag)}
        steps = sorted({s for values in series.values() for s in values})
        offset = len(epochs)
        epochs += [f"{label} {s + 1}" for s in steps]
        for name, values in series.items():
            column = layers.setdefault(name, [None] * offset)
            column += [None] * (offset - len(column))
            column += [values.get(s) for s in steps]
    for column in layers.values():
        column += [None] * (len(epochs) - len(column))
    return {"epochs": epochs, "layers": layers}


def log_sensitivity(log_dir, result, step=0):
    """Write a `tfdeploy.export.sensitivity` result to TensorBoard: the bar chart as the
    ``quantization/sensitivity`` image and the table as text."""
    from tfdeploy.viz.plots import sensitivity_chart

    log_images(log_dir, {"quantization/sensitivity": sensitivity_chart(result.rows)}, step)
    log_text(log_dir, "quantization/sensitivity_table",
             "```\n" + result.table() + "\n```", step)
