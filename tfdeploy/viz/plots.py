"""Matplotlib figures, rendered once to PNG bytes and reused by TensorBoard and the report.

Every function returns PNG bytes (no pyplot state, no window): pass them to
`tfdeploy.viz.log_images` and/or `tfdeploy.viz.write_report`.
"""

import io

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.text import Text
from matplotlib.transforms import Bbox
from matplotlib.ticker import MaxNLocator

from tfdeploy.errors import DataError

#: One caption per standard figure name (the report prints them under the image).
CAPTIONS = {
    "tradeoff": "Accuracy against gzip size and against p50 latency; the Pareto front "
                "(no other variant is both smaller/faster and more accurate) is marked.",
    "sparsity_heatmap": "Share of zero weights per layer at the end of each fine-tuning epoch.",
    "weight_distributions": "Kernel values per layer at each stage (log counts): pruning makes "
                            "the zero spike, clustering leaves a few centroids (dashed), int8 "
                            "stores integer levels.",
    "confusion_matrices": "Confusion matrix of every artifact on the test data (rows: true "
                          "class, columns: predicted).",
    "recall_change": "Per-class recall of the compressed artifact minus the float reference.",
    "saliency": "What the models look at: saliency maps of the float model and its "
                "compressed variants on the same test images, with the agreement score.",
}


def to_png(fig, dpi=90):
    """Render a matplotlib ``Figure`` to PNG bytes (one draw: no tight bounding box pass)."""
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


def pareto_front(costs, values):
    """Indices of the points no other point beats (cost lower-or-equal and value higher-or-equal,
    one strictly); sorted by cost."""
    costs, values = np.asarray(costs, float), np.asarray(values, float)
    front = []
    for i in range(len(costs)):
        dominated = np.any((costs <= costs[i]) & (values >= values[i])
                           & ((costs < costs[i]) | (values > values[i])))
        if not dominated:
            front.append(i)
    return sorted(front, key=lambda i: (costs[i], values[i]))


def _short(label, n=28):
    label = str(label)
    return label if len(label) <= n else label[:n - 1] + "…"


def label_box(label, renderer):
    """The window extent of an ``Annotation``'s text alone (its leader line left out)."""
    label.update_positions(renderer)
    return Text.get_window_extent(label, renderer)


def _overlaps(box, boxes):
    return any(box.overlaps(other) for other in boxes)


def _inside(box, frame):
    return (box.x0 >= frame.x0 and box.x1 <= frame.x1 and box.y0 >= frame.y0
            and box.y1 <= frame.y1)


def place_labels(ax, labels, renderer, pad=7, radius=6):
    """Move each label (an ``Annotation`` at its point) so no two labels overlap.

    Tied or close points get their labels stacked above and below the point, or moved to its
    left, inside the axes and clear of the legend and of every labelled point; a label moved
    away from its point gets a thin leader line back to it. Offsets are in points, so the
    placement holds at any dpi.

    Args:
        ax: the axes holding the labels.
        labels: ``Annotation`` objects with ``textcoords="offset points"``, in the order to
            place them.
        renderer: the figure's renderer after a draw (``fig.canvas.get_renderer()``).
        pad: distance of a label from its point, in points (clear of the Pareto
            front's ring). Defaults to 7.
        radius: half the side of the square kept free around each point, in points.
            Defaults to 6.
    """
    to_px = renderer.points_to_pixels
    frame = ax.get_window_extent(renderer)
    legend = ax.get_legend()
    placed = [legend.get_window_extent(renderer)] if legend is not None else []
    r = to_px(radius)
    for label in labels:
        x, y = ax.transData.transform(label.xy)
        placed.append(Bbox([[x - r, y - r], [x + r, y + r]]))
    for label in labels:
        label.xyann = (pad, pad)
        box = label_box(label, renderer)
        step = box.height / to_px(1.0) + 1  # one text line, in points
        width = box.width / to_px(1.0)
        lines = [n for k in range(12) for n in (k, -k - 1)]  # 0, -1, 1, -2, 2, ... lines
        candidates = [(dx, pad + n * step) for n in lines for dx in (pad, -pad - width)]
        chosen, fallback = None, None
        for offset in candidates:
            label.xyann = offset
            box = label_box(label, renderer)
            if not _overlaps(box, placed):
                if _inside(box, frame):
                    chosen = offset
                    break
                fallback = fallback or offset
        label.xyann = chosen or fallback or (pad, pad)
        if label.arrow_patch is not None:  # a leader line only for a label moved away
            label.arrow_patch.set_visible(tuple(label.xyann) != (pad, pad))
        placed.append(label_box(label, renderer))


_LEADER = dict(arrowstyle="-", color="#999999", lw=0.6, shrinkA=0, shrinkB=3)


def tradeoff_figure(rows, name_key="variant"):
    """The `tradeoff` plot as a matplotlib ``Figure`` (labels already placed apart)."""
    fig = Figure(figsize=(12, 4.6), layout="tight")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 2)
    panels = (("gzip_bytes", "gzip bytes (log)", True),
              ("latency_p50_ms", "p50 latency, ms/sample", False))
    labelled = []
    for ax, (key, label, log) in zip(axes, panels):
        pts = [(r.get(key, r.get("ms_per_sample") if key == "latency_p50_ms" else None),
                r.get("accuracy"), r.get(name_key, "")) for r in rows]
        pts = [(c, a, n) for c, a, n in pts if c is not None and a is not None]
        if not pts:
            ax.set_axis_off()
            ax.set_title(f"no {key} values")
            continue
        cost, acc = [p[0] for p in pts], [100 * p[1] for p in pts]
        front = pareto_front(cost, acc)
        ax.scatter(cost, acc, s=36, color="#4c72b0", zorder=3, label="variant")
        ax.plot([cost[i] for i in front], [acc[i] for i in front], "-o", color="#dd5555",
                mfc="none", ms=12, lw=1.5, zorder=2, label="Pareto front")
        notes = [ax.annotate(_short(n), (c, a), textcoords="offset points", xytext=(7, 7),
                             fontsize=8, arrowprops=_LEADER)
                 for c, a, (_, _, n) in zip(cost, acc, pts)]
        for note in notes:
            note.set_in_layout(False)  # the layout must not move while labels are placed
        if log:
            ax.set_xscale("log")
        ax.margins(x=0.08, y=0.12)
        ax.set_xlabel(label)
        ax.set_ylabel("accuracy, %")
        ax.grid(alpha=0.3)
        ax.legend(loc="best", fontsize=8)
        labelled.append((ax, notes))
    fig.suptitle("What did compression cost? accuracy against size and latency")
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    for ax, notes in labelled:
        # "best" looks at the labels too: pin the legend where it went, then move the labels
        (x0, y0), _ = ax.transAxes.inverted().transform(
            ax.get_legend().get_window_extent(renderer))
        ax.legend(loc=(x0, y0), fontsize=8)
        place_labels(ax, notes, renderer)
    return fig


def tradeoff(rows, name_key="variant"):
    """Accuracy vs gzip bytes and accuracy vs p50 latency, Pareto front marked.

    Rows without a value on an axis (e.g. an in-memory Keras model has no file)
    are left out of that panel. Labels of tied or close variants are placed apart
    (`place_labels`).
    """
    return to_png(tradeoff_figure(rows, name_key))


def sparsity_heatmap(history):
    """Layer × epoch heatmap of sparsity.

    Args:
        history: ``{"epochs": [labels], "layers": {layer: [sparsity per epoch]}}``
            (as returned by `tfdeploy.viz.read_sparsity`).
    """
    layers = list(history.get("layers", {}))
    epochs = list(history.get("epochs", []))
    if not layers or not epochs:
        raise DataError("sparsity_heatmap needs at least one layer and one epoch; the log "
                        "directory held no sparsity scalars (was SparsityMonitor given log_dir?).")
    grid = np.array([[np.nan if v is None else v for v in history["layers"][name]]
                     for name in layers], dtype=float)
    fig = Figure(figsize=(max(5, 0.55 * len(epochs) + 3), max(2.5, 0.35 * len(layers) + 1.5)),
                 layout="tight")
    ax = fig.subplots()
    im = ax.imshow(grid, vmin=0, vmax=1, cmap="viridis", aspect="auto")
    ax.set_yticks(range(len(layers)), layers, fontsize=8)
    ax.set_xticks(range(len(epochs)), epochs, fontsize=8, rotation=45, ha="right")
    for i in range(grid.shape[0]):
        for j in range(grid.shape[1]):
            if np.isfinite(grid[i, j]):
                ax.text(j, i, f"{grid[i, j]:.2f}", ha="center", va="center", fontsize=7,
                        color="white" if grid[i, j] < 0.6 else "black")
    fig.colorbar(im, ax=ax, label="share of zero weights")
    ax.set_xlabel("stage / epoch")
    ax.set_title("Sparsity per layer")
    return to_png(fig)


def weight_distributions(stages, max_layers=8, bins=81):
    """Histograms of each layer's kernel at each stage (rows: layers, columns: stages).

    Args:
        stages: ``{stage_name: {layer_name: array}}`` in display order (e.g.
            from `tfdeploy.viz.model_kernels` / `tfdeploy.viz.tflite_kernels`).
            A layer missing from a stage leaves its cell empty.
        max_layers: show at most this many layers (the largest ones). Defaults to 8.
        bins: histogram bins. Defaults to 81.
    """
    if not stages:
        raise DataError("weight_distributions needs at least one stage.")
    sizes = {}
    for kernels in stages.values():
        for name, arr in kernels.items():
            sizes[name] = max(sizes.get(name, 0), np.size(arr))
    order = [n for n in next(iter(stages.values())) if n in sizes]
    order += [n for n in sizes if n not in order]
    keep = set(sorted(order, key=lambda n: -sizes[n])[:max_layers])
    layers = [n for n in order if n in keep]
    fig = Figure(figsize=(3.2 * len(stages), 1.7 * len(layers) + 0.8))
    axes = np.asarray(fig.subplots(len(layers), len(stages), squeeze=False))
    for j, (stage, kernels) in enumerate(stages.items()):
        axes[0, j].set_title(stage, fontsize=10)
        for i, name in enumerate(layers):
            ax = axes[i, j]
            ax.tick_params(labelsize=7)
            if j == 0:
                ax.set_ylabel(name, fontsize=8)
            if name not in kernels:
                ax.text(0.5, 0.5, "-", ha="center", va="center", transform=ax.transAxes)
                ax.set_xticks([])
                ax.set_yticks([])
                continue
            values = np.asarray(kernels[name]).ravel().astype(np.float64)
            counts, edges = np.histogram(values, bins=bins)
            ax.stairs(np.log10(counts + 1.0), edges, fill=True, color="#4c72b0")
            ax.xaxis.set_major_locator(MaxNLocator(4))
            ax.yaxis.set_major_locator(MaxNLocator(3, integer=True))
            zeros = float(np.mean(values == 0))
            unique = np.unique(values)
            label = f"zeros {zeros:.0%}\n{unique.size} distinct"
            if unique.size <= 32 and values.size >= 256:  # clustered: mark the centroids
                ax.vlines(unique, 0, np.log10(counts.max() + 1.0), color="#dd5555", lw=0.8,
                          ls="--")
            ax.text(0.98, 0.95, label, ha="right", va="top", fontsize=7, transform=ax.transAxes)
    fig.supylabel("log10(count + 1)", fontsize=9)
    fig.suptitle("Weight distributions per layer and stage")
    fig.subplots_adjust(left=0.1, right=0.98, top=1 - 0.7 / fig.get_figheight(), bottom=0.04,
                        hspace=0.35, wspace=0.25)
    return to_png(fig)


def confusion_matrix(y_true, y_pred, n):
    """The ``n × n`` count matrix (rows: true class, columns: predicted class)."""
    out = np.zeros((n, n), dtype=np.int64)
    np.add.at(out, (np.asarray(y_true, int), np.asarray(y_pred, int)), 1)
    return out


def confusion_matrices(y_true, predictions, class_names):
    """One confusion matrix per artifact (``predictions``: ``{name: y_pred}``)."""
    if not predictions:
        raise DataError("confusion_matrices needs at least one artifact's predictions.")
    n = len(class_names)
    cols = min(3, len(predictions))
    nrows = -(-len(predictions) // cols)
    fig = Figure(figsize=(4.2 * cols, 4.0 * nrows))
    fig.subplots_adjust(left=0.07, right=0.98, bottom=0.08, top=0.93, wspace=0.35, hspace=0.45)
    axes = np.asarray(fig.subplots(nrows, cols, squeeze=False)).ravel()
    for ax, (name, pred) in zip(axes, predictions.items()):
        cm = confusion_matrix(y_true, pred, n)
        ax.imshow(cm, cmap="Blues")
        for i in range(n):
            for j in range(n):
                if cm[i, j]:
                    ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=6,
                            color="white" if cm[i, j] > cm.max() / 2 else "black")
        acc = float(np.mean(np.asarray(pred) == np.asarray(y_true)))
        ax.set_title(f"{_short(name, 34)}\naccuracy {acc:.2%}", fontsize=9)
        ticks = [_short(c, 8) for c in class_names]
        ax.set_xticks(range(n), ticks, fontsize=6, rotation=90)
        ax.set_yticks(range(n), ticks, fontsize=6)
        ax.set_xlabel("predicted", fontsize=8)
        ax.set_ylabel("true", fontsize=8)
    for ax in axes[len(predictions):]:
        ax.set_axis_off()
    return to_png(fig)


def recall_change(y_true, reference_pred, compressed_pred, class_names,
                  labels=("float", "int8")):
    """Bar chart of per-class recall(compressed) − recall(reference), in points."""
    y_true = np.asarray(y_true, int)
    n = len(class_names)
    support = np.bincount(y_true, minlength=n)[:n]

    def recall(pred):
        hit = np.bincount(y_true[np.asarray(pred, int) == y_true], minlength=n)[:n]
        return np.divide(hit, support, out=np.zeros(n), where=support > 0)

    delta = 100 * (recall(compressed_pred) - recall(reference_pred))
    fig = Figure(figsize=(max(6, 0.5 * n + 2), 3.6), layout="tight")
    ax = fig.subplots()
    colors = ["#dd5555" if d < 0 else "#55a868" for d in delta]
    ax.bar(range(n), delta, color=colors)
    ax.axhline(0, color="black", lw=0.8)
    ax.set_xticks(range(n), [_short(c, 10) for c in class_names], fontsize=8, rotation=45,
                  ha="right")
    ax.set_ylabel("recall change, points")
    ax.set_title(f"Per-class recall: {labels[1]} minus {labels[0]}")
    lim = max(1.0, float(np.max(np.abs(delta))) * 1.2)
    ax.set_ylim(-lim, lim)
    for i, d in enumerate(delta):
        if d:
            ax.text(i, d, f"{d:+.1f}", ha="center", va="bottom" if d > 0 else "top", fontsize=7)
    return to_png(fig)


def saliency_panel(images, maps, scores=None, method="saliency"):
    """Images (rows) beside each model's saliency map (columns).

    Args:
        images: array ``(n, h, w, c)``.
        maps: ``{model_name: array (n, h, w)}``, the float model first.
        scores: optional ``{model_name: {"spearman": float, "topk_overlap": float}}``
            shown in the column titles.
        method: "integrated gradients" or "Grad-CAM" (the title).
    """
    images = np.asarray(images)
    names = list(maps)
    n = len(images)
    fig = Figure(figsize=(2.0 * (len(names) + 1), 2.0 * n + 0.9))
    fig.subplots_adjust(left=0.02, right=0.98, bottom=0.02, top=1 - 0.9 / (2.0 * n + 0.9),
                        wspace=0.05, hspace=0.08)
    axes = np.asarray(fig.subplots(n, len(names) + 1, squeeze=False))
    for i in range(n):
        img = images[i].astype(np.float64)
        img = (img - img.min()) / (np.ptp(img) or 1.0)
        axes[i, 0].imshow(img[..., 0] if img.shape[-1] == 1 else img, cmap="gray")
        for j, name in enumerate(names, start=1):
            m = np.abs(np.asarray(maps[name][i], np.float64))
            axes[i, j].imshow(img[..., 0] if img.shape[-1] == 1 else img.mean(-1), cmap="gray")
            axes[i, j].imshow(m / (m.max() or 1.0), cmap="inferno", alpha=0.6,
                              extent=(-0.5, img.shape[1] - 0.5, img.shape[0] - 0.5, -0.5))
    axes[0, 0].set_title("input", fontsize=9)
    for j, name in enumerate(names, start=1):
        title = _short(name, 22)
        if scores and name in scores:
            s = scores[name]
            title += f"\nρ={s['spearman']:.2f} top-k={s['topk_overlap']:.2f}"
        axes[0, j].set_title(title, fontsize=8)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(f"{method}: float model vs compressed (ρ: rank correlation with the float map)",
                 fontsize=10)
    return to_png(fig)


def standard_figures(rows, y_true=None, predictions=None, class_names=None, reference=None,
                     compressed=None, skip=()):
    """The figures every run gets: tradeoff; with predictions also confusion matrices and the
    per-class recall change of ``compressed`` against ``reference`` (default: the first and
    last variants with predictions). Names in ``skip`` (already rendered) are not rendered
    again. Returns ``{name: PNG bytes}``."""
    out = {} if "tradeoff" in skip else {"tradeoff": tradeoff(rows)}
    if predictions and y_true is not None and class_names is not None:
        if "confusion_matrices" not in skip:
            out["confusion_matrices"] = confusion_matrices(y_true, predictions, class_names)
        names = list(predictions)
        reference = reference or names[0]
        compressed = compressed or names[-1]
        for name in (reference, compressed):
            if name not in predictions:
                raise DataError(f"{name!r} has no predictions; variants with predictions: "
                                f"{names}.")
        if reference != compressed and "recall_change" not in skip:
            out["recall_change"] = recall_change(y_true, predictions[reference],
                                                 predictions[compressed], class_names,
                                                 (reference, compressed))
    return out


def sensitivity_chart(rows, max_layers=30):
    """Per-layer int8 sensitivity (rows of `tfdeploy.export.sensitivity`, most sensitive first):
    the output error with the layer alone int8, and the accuracy points regained with it alone
    float, as horizontal bars."""
    rows = list(rows)[:max_layers]
    if not rows:
        raise DataError("sensitivity_chart needs at least one layer row.")
    names = [_short(r["layer"]) for r in rows][::-1]
    fig = Figure(figsize=(9, 1.2 + 0.28 * len(rows)))
    left, right = fig.subplots(1, 2, sharey=True)
    y = np.arange(len(rows))
    left.barh(y, [r["error"] for r in rows][::-1], color="#c44e52")
    left.set_yticks(y, names, fontsize=7)
    left.set_xlabel("relative output error, layer alone int8")
    right.barh(y, [r["float_gain"] for r in rows][::-1], color="#4c72b0")
    right.set_xlabel("accuracy regained, layer alone float (points)")
    fig.suptitle("Per-layer int8 sensitivity, measured in LiteRT (most sensitive at the top)",
                 fontsize=9)
    fig.tight_layout()
    return to_png(fig)
