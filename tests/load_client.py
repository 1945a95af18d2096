"""A client process for the fault tests: writes N variables, recording each outcome after its answer.

    python load_client.py AREA PREFIX COUNT OUTFILE [COMMAND]

Each write is a complete client call (``dbtool.cli.main.main``: connect, auto-start, retry), so a
line with code 0 in OUTFILE means the server acknowledged that write.
"""

from __future__ import annotations

import contextlib
import io
import json
import sys

from dbtool.cli.main import main


def run(area: str, prefix: str, count: int, out: str) -> None:
    with open(out, "w", encoding="utf-8") as f:
        for i in range(count):
            err = io.StringIO()
            with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
                code = main(["--area", area, "--timeout", "90", "set-var", f"{prefix}-{i}", str(i)])
            f.write(json.dumps({"key": f"{prefix}-{i}", "value": str(i), "code": code, "err": err.getvalue().strip()}))
            f.write("\n")
            f.flush()


if __name__ == "__main__":
    run(sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4])
