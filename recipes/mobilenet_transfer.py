"""MobileNet transfer recipe (logic in tfdeploy/recipes/mobilenet_transfer.py); see --help."""

import sys

from tfdeploy.recipes.mobilenet_transfer import main

if __name__ == "__main__":
    sys.exit(main())
