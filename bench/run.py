"""Run every benchmark, one after another, and print each one's figures, baselines and ratios.

    python bench/run.py                 # everything, full size (about 15 minutes on 2 cores)
    python bench/run.py fanout reach    # only these
    python bench/run.py --smoke         # tiny sizes: checks the scripts run, figures mean nothing
    python bench/run.py --database-url postgresql+psycopg://postgres@127.0.0.1:5432/postgres

Each benchmark runs in its own process so none inherits another's memory or threads. Each prints
its block as it finishes; a summary of every goal follows at the end. The exit status is 1 if
any benchmark could not run (its reason is printed), else 0 — a missed goal is a result, not a
failure of the run.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

# name: (full-size arguments, smoke arguments)
BENCHMARKS: dict[str, tuple[list[str], list[str]]] = {
    "speech": ([], ["--runs", "1", "--chars", "200"]),
    "schedule": ([], ["--smoke"]),
    "dbwrite": ([], ["--smoke"]),
    "reach": ([], ["--smoke"]),
    "fanout": ([], ["--smoke"]),
    "ingest_workers": ([], ["--smoke"]),
}
# Benchmarks that take a PostgreSQL URL (--database-url) when one is given to the runner.
TAKES_DATABASE = {"ingest_workers"}
# Benchmarks run on SQLite, and a second time on PostgreSQL when the runner is given a URL.
ALSO_ON_POSTGRES = {"dbwrite", "reach"}
VERDICT = re.compile(r"goal: .*\b(ok|MISSED)\s*$")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("names", nargs="*", help=f"benchmarks to run (default all: {', '.join(BENCHMARKS)})")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes")
    parser.add_argument("--database-url", help="PostgreSQL server for the benchmarks that need one")
    args = parser.parse_args(argv)
    unknown = [n for n in args.names if n not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark(s) {', '.join(unknown)}; known: {', '.join(BENCHMARKS)}")

    failed: list[str] = []
    summary: list[str] = []
    runs: list[tuple[str, list[str]]] = []
    for name in args.names or list(BENCHMARKS):
        full, smoke = BENCHMARKS[name]
        cmd = [sys.executable, str(HERE / f"{name}.py"), *(smoke if args.smoke else full)]
        if args.database_url and name in TAKES_DATABASE:
            cmd += ["--database-url", args.database_url]
        runs.append((name, cmd))
        if args.database_url and name in ALSO_ON_POSTGRES:
            runs.append((f"{name}-pg", [*cmd, "--database-url", args.database_url]))
    for name, cmd in runs:
        print(f"\n##### {name}: {' '.join(cmd[1:])}", flush=True)
        started = time.monotonic()
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, bufsize=1)
        assert proc.stdout is not None
        measure = ""
        for line in proc.stdout:
            sys.stdout.write(line)
            sys.stdout.flush()
            stripped = line.strip()
            if stripped and not stripped.startswith(("baseline", "ratio", "goal")) and ": " in stripped:
                measure = stripped
            if (m := VERDICT.search(stripped)) is not None:
                summary.append(f"  {name:15} {m.group(1):6}  {measure}  |  {stripped}")
        code = proc.wait()
        print(f"##### {name}: exit {code} after {time.monotonic() - started:.0f} s", flush=True)
        if code != 0:
            failed.append(f"{name} (exit {code})")

    print("\n===== summary")
    print("\n".join(summary) or "  (no goals printed)")
    if failed:
        print(f"could not run: {', '.join(failed)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
