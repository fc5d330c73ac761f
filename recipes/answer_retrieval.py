"""Answer retrieval recipe (logic in tfdeploy/recipes/answer_retrieval.py): `--help` for flags."""
import sys
from tfdeploy.recipes.answer_retrieval import main
if __name__ == "__main__":
    sys.exit(main())
