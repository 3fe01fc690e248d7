"""What every benchmark shares: figures measured beside a baseline in the same run, printed alike.

A benchmark script is runnable on its own (`python bench/NAME.py [--smoke]`) and has
`main(argv) -> int`. It measures, then calls `print_results(title, results)`. `--smoke` runs it at
tiny sizes (the test suite does that so the scripts cannot rot; smoke figures mean nothing).

A benchmark that cannot reach what it needs (a broker, a database, a binary) raises
`Unavailable`; `run_main` turns that into a message on stderr and exit status 2, so no figure is
ever printed that was not measured.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

# Benchmarks import the project from the checkout they sit in.
ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


class Unavailable(RuntimeError):
    """Something the benchmark needs is not there (broker, database, binary)."""


@dataclass(frozen=True)
class Result:
    """One figure, the baseline measured beside it in the same run, and the goal for their ratio.

    ratio = figure / baseline. `higher_is_better` says which way the goal points: for rates
    (rows/s) the ratio should be high, for times (seconds) low.
    """

    what: str
    figure: float
    unit: str
    baseline_what: str
    baseline: float
    goal_ratio: float | None = None
    higher_is_better: bool = True
    # A goal on the figure itself (e.g. "stored within 1 s"): (limit, unit text); checked like the ratio.
    goal_figure: float | None = None

    @property
    def ratio(self) -> float:
        if self.baseline == 0:
            return math.inf if self.figure else math.nan
        return self.figure / self.baseline

    def _meets(self, value: float, limit: float) -> bool:
        return value >= limit if self.higher_is_better else value <= limit

    @property
    def ok(self) -> bool | None:
        """True/False against the goals given; None when there is no goal."""
        checks = []
        if self.goal_ratio is not None:
            checks.append(self._meets(self.ratio, self.goal_ratio))
        if self.goal_figure is not None:
            checks.append(self._meets(self.figure, self.goal_figure))
        return all(checks) if checks else None

    def goal_text(self) -> str:
        sign = ">=" if self.higher_is_better else "<="
        parts = []
        if self.goal_figure is not None:
            parts.append(f"figure {sign} {_num(self.goal_figure)} {self.unit}")
        if self.goal_ratio is not None:
            parts.append(f"ratio {sign} {_num(self.goal_ratio)}x")
        return ", ".join(parts) or "-"


def _num(x: float) -> str:
    if math.isnan(x) or math.isinf(x):
        return str(x)
    if x == 0:
        return "0"
    if abs(x) >= 1000:
        return f"{x:,.0f}"
    if abs(x) >= 10:
        return f"{x:.1f}"
    if abs(x) >= 0.1:
        return f"{x:.3f}"
    return f"{x:.3g}"


def print_results(title: str, results: Sequence[Result], *, notes: Sequence[str] = ()) -> None:
    """Print one block: each figure, its baseline, their ratio and the goal."""
    print(f"\n== {title}")
    for r in results:
        verdict = {True: "ok", False: "MISSED", None: ""}[r.ok]
        print(f"  {r.what}: {_num(r.figure)} {r.unit}")
        print(f"      baseline, {r.baseline_what}: {_num(r.baseline)} {r.unit}")
        print(f"      ratio {_num(r.ratio)}x   goal: {r.goal_text()}   {verdict}".rstrip())
    for note in notes:
        print(f"  {note}")
    sys.stdout.flush()


def run_main(main: Callable[[list[str] | None], int], argv: list[str] | None = None) -> int:
    """Call a benchmark's main; an Unavailable dependency exits 2 with the reason, no figures."""
    try:
        return main(argv)
    except Unavailable as exc:
        print(f"benchmark cannot run: {exc}", file=sys.stderr)
        return 2
