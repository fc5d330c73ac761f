"""What every benchmark JSON records about its run: the CPU, the load, the command, the date.

    from _record import run_info, write_result
    result = {"run": run_info(argv), ...}
    write_result(result, args.out)   # prints the JSON; with a path, writes it there too

The machine is shared, so the load average at the start and at the end sit beside the figures.
"""

import datetime
import json
import os
import platform
import subprocess
import sys

_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_tile", "amx_int8",
          "amx_bf16")


def cpu_info():
    """lscpu's model name, the int8-relevant flags, core count and load average."""
    info = {"machine": platform.machine(), "cores": os.cpu_count()}
    try:
        text = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        text = ""
    fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
    info["model_name"] = fields.get("Model name", "").strip() or platform.processor()
    flags = set(fields.get("Flags", "").split())
    info["flags"] = {f: f in flags for f in _FLAGS}
    info["loadavg"] = os.getloadavg()
    return info


def run_info(argv=None):
    """The command (script name and ``argv``, default ``sys.argv[1:]``), the UTC date and
    `cpu_info` (its ``loadavg`` is the load at the start)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    return {"command": [os.path.basename(sys.argv[0] or "python")] + argv,
            "date_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(
                timespec="seconds"),
            "python": platform.python_version(), "cpu": cpu_info()}


def write_result(result, out=None, indent=2):
    """Add the load average at the end to ``result["run"]``, print ``result`` as JSON on
    stdout (``indent=None``: on one line) and, when ``out`` is a path, write the same document
    there, indented, with a final newline."""
    if "run" in result:
        result["run"]["loadavg_end"] = os.getloadavg()
    text = json.dumps(result, indent=indent, default=float)
    if out:
        os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
        with open(out, "w") as f:
            f.write(json.dumps(result, indent=indent or 1, default=float) + "\n")
    print(text)
    return text
