"""Sentiment monitor recipe (logic in tfdeploy/recipes/sentiment_monitor.py): `--help` for flags."""
import sys
from tfdeploy.recipes.sentiment_monitor import main
if __name__ == "__main__":
    sys.exit(main())
