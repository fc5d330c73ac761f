"""``tfdeploy quickstart``: the quickstart recipe (`tfdeploy.recipes.quickstart`) as a command.

The recipe owns the flags and the run; this module only names the command. The path is
one way: this command → the recipe → `tfdeploy.pipeline.quickstart`.
"""

from tfdeploy.recipes import quickstart as recipe

NAME = "quickstart"
HELP = ("Train, prune, QAT-fine-tune, export (SavedModel, TFLite float32/int8) and verify on "
        "the bundled digits or your image directory; print one comparison table.")
add_arguments = recipe.add_arguments
run = recipe.run
