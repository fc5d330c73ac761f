"""``tfdeploy run NAME [ARGS...]``: run a recipe of ``tfdeploy.recipes``; ``--list`` lists them."""

import argparse

NAME = "run"
HELP = ("Run a recipe (a whole worked example) by name: `tfdeploy run NAME [recipe flags]`; "
        "`tfdeploy run --list` lists every recipe, `tfdeploy run NAME --help` its flags.")


def add_arguments(parser):
    parser.add_argument("recipe", nargs="?", help="recipe name (see --list)")
    parser.add_argument("recipe_args", nargs=argparse.REMAINDER,
                        help="flags passed to the recipe (see `tfdeploy run NAME --help`)")
    parser.add_argument("--list", action="store_true", help="list the recipes and exit")
    parser.set_defaults(_accepts_extra=True)


def format_list():
    """One line per recipe: its name and the first line of its docstring."""
    from tfdeploy import recipes

    found = recipes.names()
    width = max((len(n) for n in found), default=0)
    return "\n".join(f"{n.ljust(width)}  {recipes.summary(n)}" for n in found)


def run(args):
    from tfdeploy import recipes

    if args.list:
        print(format_list())
        return 0
    if not args.recipe:
        print("tfdeploy run: give a recipe name, or --list to see them:\n" + format_list())
        return 2
    module = recipes.load(args.recipe)
    return int(module.main(list(args.recipe_args) + list(getattr(args, "_extra", []))) or 0)
