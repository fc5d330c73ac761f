"""The recipe harness: what every recipe run shares, written once.

A recipe declares its flags with `add_run_arguments` (``--data --output --logs
--json --epochs --seed --quiet``, the flags ``tfdeploy quickstart`` takes too),
wraps its body in ``with Run(NAME, args) as session:`` and gets:

- the seed (`seed`, through tfdeploy's one Keras module) and the run's clock;
- its result rows (`Rows`): one dict per variant, looked up by variant name;
- served models (`Run.serve`): started on a `contextlib.ExitStack` and stopped at
  `Run.stop_serving` or when the run ends, also when the body raises;
- its log directories (`Run.logs`): ``--logs ''`` turns TensorBoard logs and the
  report off instead of writing into the current directory;
- the printed comparison (`format_table`: metrics and baselines side by side, one
  row each) and the ``--json`` file (`Run.finish`): written atomically, with every
  path relative to the JSON file's own directory, so results and artifacts can
  move together.

`main` runs a recipe's ``run(args)`` and turns a typed error into one line on stderr
and exit status 1. Nothing heavy is imported at module level: ``tfdeploy --help``
builds the quickstart's parser through this module without TensorFlow.
"""

import contextlib
import os
import sys
import time


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
                   help="TensorBoard log directory; '' writes no logs (default: %(default)s)")
    p.add_argument("--json", default=None,
                   help="also write the results as JSON to this file (paths in it are "
                        "relative to its directory)")
    p.add_argument("--epochs", type=int, default=epochs,
                   help=f"{epochs_help} (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    p.add_argument("--quiet", action="store_true", help="no per-epoch Keras output")


def seed(value):
    """Seed Python's ``random``, NumPy and TensorFlow with ``value``: ``set_random_seed`` of
    the Keras `tfdeploy._keras` selects (TensorFlow's own ``keras`` attribute may be Keras 3
    in a process that imported Keras 3 first)."""
    from tfdeploy._keras import keras

    keras.utils.set_random_seed(int(value))


class Rows:
    """A run's result rows, in order: one dict per variant, looked up by its name.

    Example:
        rows = Rows()
        rows.add({"variant": "TF-IDF", "format": "baseline", "accuracy": 0.81})
        rows["TF-IDF"]["accuracy"]        # 0.81
        rows.baselines()                   # the rows whose format is "baseline"
    """

    def __init__(self, rows=()):
        self._rows = {}
        for row in rows:
            self.add(row)

    def add(self, row):
        """Append ``row`` (a dict with a unique ``"variant"``); returns it.

        Raises:
            ValueError: the row has no variant, or one already added.
        """
        variant = row.get("variant")
        if variant is None:
            raise ValueError(f"A result row needs a 'variant' name; received keys {sorted(row)}.")
        if variant in self._rows:
            raise ValueError(f"Row {variant!r} was already added; give each variant its own name.")
        self._rows[variant] = row
        return row

    def __getitem__(self, variant):
        try:
            return self._rows[variant]
        except KeyError:
            raise KeyError(f"No row {variant!r}; the rows are {list(self._rows)}.") from None

    def __contains__(self, variant):
        return variant in self._rows

    def __iter__(self):
        return iter(self._rows.values())

    def __len__(self):
        return len(self._rows)

    def baselines(self):
        """The rows whose ``format`` is ``"baseline"`` (untrained comparisons)."""
        return [r for r in self if r.get("format") == "baseline"]

    def as_list(self):
        """The rows as a plain list (what `tfdeploy.viz` and the JSON take)."""
        return list(self._rows.values())


def format_table(rows, columns):
    """Aligned text table of ``rows``; ``columns`` is a list of ``(key, header, format)``
    (a missing value prints as ``-``)."""
    from tfdeploy import _table

    def cell(row, key, fmt):
        value = row.get(key)
        if value is None:
            return "-"
        return fmt.format(value) if fmt else str(value)

    return _table.render([h for _, h, _ in columns],
                         [[cell(r, k, f) for k, _, f in columns] for r in rows],
                         align="l" + "r" * (len(columns) - 1), sep=" | ", rule_sep="-+-")


def serving(name, base_path):
    """A not yet started server for ``base_path`` as model ``name`` (free REST and gRPC
    ports; a context manager): the same server as ``tfdeploy serve --model_name NAME
    --model_base_path BASE``."""
    from tfdeploy.serving import ModelConfig, create_server

    return create_server(configs=[ModelConfig(name, os.path.abspath(base_path))], port=0,
                         rest_api_port=0, file_system_poll_wait_seconds=0)


class Run:
    """One recipe run: seeded and timed on entry; its served models stopped on exit.

    Args:
        name: the recipe's name (error and log messages).
        args: the parsed flags of `add_run_arguments` (``seed``, ``logs``, ``json``).
    """

    def __init__(self, name, args):
        self.name, self.args = name, args
        self.rows = Rows()
        self._servers = contextlib.ExitStack()
        self._start = None

    def __enter__(self):
        seed(getattr(self.args, "seed", 0))
        self._start = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.stop_serving()
        return False

    @property
    def elapsed(self):
        """Seconds since the run started."""
        return time.perf_counter() - self._start

    def logs(self, *parts):
        """``--logs`` joined with ``parts``, or None when ``--logs`` is empty (no logging)."""
        root = getattr(self.args, "logs", None)
        return os.path.join(root, *parts) if root else None

    def serve(self, model_name, base_path):
        """Start serving ``base_path`` as ``model_name``; returns the started server
        (``rest_port``, ``grpc_port``). It stops at `stop_serving` or when the run ends."""
        return self._servers.enter_context(serving(model_name, base_path))

    def stop_serving(self):
        """Stop every model this run serves (last started first)."""
        self._servers.close()

    def path(self, path):
        """``path`` as the ``--json`` file names it: relative to that file's directory
        (None stays None; without ``--json``, ``path`` as given)."""
        if path is None or not getattr(self.args, "json", None):
            return path
        return os.path.relpath(path, os.path.dirname(os.path.abspath(self.args.json)))

    def json_rows(self, rows):
        """``rows`` as the JSON holds them: ``path``/``paths`` made relative (`path`)."""
        out = []
        for row in rows:
            row = dict(row)
            if row.get("path") is not None:
                row["path"] = self.path(row["path"])
            if row.get("paths") is not None:
                row["paths"] = [self.path(p) for p in row["paths"]]
            out.append(row)
        return out

    def print_outputs(self, report=None):
        """Print where the report (when there is one) and the TensorBoard logs are."""
        if report:
            print(f"report: {report}")
        if self.logs():
            print(f"TensorBoard: tensorboard --logdir {self.logs()}")

    def finish(self, payload):
        """Print the run's total time and write ``payload`` + ``total_s`` to ``--json``.

        ``payload["rows"]`` and ``payload["baselines"]`` go through `json_rows`; other
        paths must already be relative (`path`). Returns the payload written.
        """
        elapsed = self.elapsed
        print(f"total {elapsed:.0f} s")
        payload = dict(payload)
        for key in ("rows", "baselines"):
            if key in payload:
                payload[key] = self.json_rows(payload[key])
        payload["total_s"] = elapsed
        write_json(getattr(self.args, "json", None), payload)
        return payload


def write_json(path, payload):
    """Write ``payload`` as indented JSON to ``path`` atomically (None: nothing): a
    reader sees the old file or the whole new one, never a part (`tfdeploy._json`)."""
    if not path:
        return None
    from tfdeploy._json import write_json as write

    return write(path, payload, indent=1)


def main(name, build_parser, run, argv=None):
    """Parse ``argv`` with ``build_parser()``, call ``run(args)``; a typed error
    (`tfdeploy.errors.TfdeployError`) prints as one line and returns 1."""
    from tfdeploy.errors import TfdeployError

    args = build_parser().parse_args(argv)
    try:
        return run(args)
    except TfdeployError as exc:
        print(f"{name}: error: {exc}", file=sys.stderr)
        return 1
