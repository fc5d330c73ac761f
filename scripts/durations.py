"""Write tests/durations.json (seconds per test file) from a pytest JUnit XML report.

The xdist scheduler in tests/conftest.py starts the longest files first from this table.
Refresh it after a full run:

    pytest --junitxml=report.xml && python scripts/durations.py report.xml
"""

import collections
import json
import os
import sys
import xml.etree.ElementTree as ET

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def file_of(classname):
    """``tests.test_x.TestCase`` -> ``tests/test_x.py`` (the longest prefix that is a file)."""
    parts = classname.split(".")
    for n in range(len(parts), 0, -1):
        path = "/".join(parts[:n]) + ".py"
        if os.path.isfile(os.path.join(ROOT, path)):
            return path
    raise ValueError(f"No test file for JUnit classname {classname!r} under {ROOT}.")


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    seconds = collections.Counter()
    for case in ET.parse(argv[0]).getroot().iter("testcase"):
        seconds[file_of(case.get("classname"))] += float(case.get("time", 0))
    table = {path: round(s, 1) for path, s in sorted(seconds.items(), key=lambda kv: -kv[1])}
    with open(os.path.join(ROOT, "tests", "durations.json"), "w") as f:
        json.dump(table, f, indent=1)
        f.write("\n")
    print(f"tests/durations.json: {len(table)} files, {sum(table.values()):.0f} s in all")
    return 0


if __name__ == "__main__":
    sys.exit(main())
