"""Quickstart recipe: the same as `tfdeploy quickstart`.

    python recipes/quickstart.py                   # bundled digits, 1-2 minutes on 2 CPUs
    python recipes/quickstart.py --data my_images  # my_images/{train,test}/<class>/*.png
    python recipes/quickstart.py --help
"""

import argparse
import sys


def main(argv=None):
    from tfdeploy.commands import quickstart

    parser = argparse.ArgumentParser(prog="recipes/quickstart.py",
                                     description=quickstart.__doc__.strip().split("\n\n")[1])
    quickstart.add_arguments(parser)
    return quickstart.run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
