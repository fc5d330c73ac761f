"""Sub-commands of the ``tfdeploy`` CLI, one module each (see ``tfdeploy/cli.py``)."""
