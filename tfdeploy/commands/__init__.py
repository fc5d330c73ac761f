"""Sub-commands of the ``tfdeploy`` CLI, one module each (see ``tfdeploy/cli.py``).

Imports nothing heavy, so the CLI can build its parsers without TensorFlow. The flags every
recipe shares are the recipe harness's (`tfdeploy.recipes._harness.add_run_arguments`).
"""
