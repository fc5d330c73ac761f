"""Train a CNN, prune, QAT-fine-tune, export SavedModel + TFLite and verify every artifact.

The same as ``tfdeploy quickstart`` (whose flags it takes), reachable as a recipe:

    tfdeploy run quickstart --data my_images --epochs 8
"""

import argparse


def main(argv=None):
    """Run the quickstart recipe; returns the exit status."""
    from tfdeploy.commands import quickstart

    parser = argparse.ArgumentParser(prog="tfdeploy run quickstart",
                                     description=quickstart.__doc__.strip().split("\n\n")[1])
    quickstart.add_arguments(parser)
    return quickstart.run(parser.parse_args(argv))
