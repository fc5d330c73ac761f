"""Quickstart recipe: the same as `tfdeploy quickstart` (logic in tfdeploy/recipes/quickstart.py).

    python recipes/quickstart.py                   # bundled digits, 1-2 minutes on 2 CPUs
    python recipes/quickstart.py --data my_images  # my_images/{train,test}/<class>/*.png
    python recipes/quickstart.py --help
"""

import sys

from tfdeploy.recipes.quickstart import main

if __name__ == "__main__":
    sys.exit(main())
