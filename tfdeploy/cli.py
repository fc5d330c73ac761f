"""The ``tfdeploy`` command.

Each sub-command lives in its own module under ``tfdeploy/commands/`` and
exposes ``NAME``, ``HELP``, ``add_arguments(parser)`` and ``run(args) -> int``.
Commands are discovered, so adding one never edits this file. Their modules
are imported only when listed or run, and must keep heavy imports inside
``run`` so ``tfdeploy --help`` stays fast.
"""

import argparse
import importlib
import pkgutil
import sys

from tfdeploy.errors import TfdeployError


def _commands():
    import tfdeploy.commands as package

    found = {}
    for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda i: i.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"tfdeploy.commands.{info.name}")
        found[module.NAME] = module
    return found


def build_parser():
    parser = argparse.ArgumentParser(
        prog="tfdeploy",
        description="Take a Keras model from training to deployment: compress, export, "
                    "verify, benchmark, serve.")
    from tfdeploy import __version__

    parser.add_argument("--version", action="version", version=f"tfdeploy {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module in _commands().items():
        p = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def main(argv=None):
    """Entry point of the ``tfdeploy`` console script; returns the exit status."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    if extra and not getattr(args, "_accepts_extra", False):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args._extra = extra
    try:
        return int(args._run(args) or 0)
    except TfdeployError as exc:
        print(f"tfdeploy {args.command}: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
