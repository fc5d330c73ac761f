"""Two-tower recommender recipe (logic in tfdeploy/recipes/recommender.py): `--help` for flags."""
import sys
from tfdeploy.recipes.recommender import main
if __name__ == "__main__":
    sys.exit(main())
