"""Sub-commands of the ``tfdeploy`` CLI, one module each (see ``tfdeploy/cli.py``), and the
flags every recipe and ``tfdeploy quickstart`` share, declared once (`add_run_arguments`).

Imports nothing heavy, so the CLI can build its parsers without TensorFlow.
"""


def add_run_arguments(p, name, data_help, epochs, epochs_help="training epochs"):
    """``--data --output --logs --json --epochs --seed --quiet`` on parser ``p``.

    Args:
        p: an ``argparse.ArgumentParser`` (or sub-parser).
        name: the run's name; TensorBoard logs default to ``logs/NAME``.
        data_help: what ``--data`` accepts, and its default.
        epochs: the default of ``--epochs``.
        epochs_help: what ``--epochs`` counts. Defaults to "training epochs".
    """
    p.add_argument("--data", default=None, help=data_help)
    p.add_argument("--output", default="saved_models",
                   help="where artifacts are written (default: %(default)s)")
    p.add_argument("--logs", default=f"logs/{name}",
                   help="TensorBoard log directory (default: %(default)s)")
    p.add_argument("--json", default=None, help="also write the results as JSON to this file")
    p.add_argument("--epochs", type=int, default=epochs,
                   help=f"{epochs_help} (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    p.add_argument("--quiet", action="store_true", help="no per-epoch Keras output")
