"""Run the benchmarks of onlysq-mcp against the floor server and write the table into docs/benchmarks.md.

    python bench/run.py                      # everything (about 6-8 minutes on 2 cores)
    python bench/run.py calls images         # only these benchmarks (the other rows of the table stay)
    python bench/run.py --runs 3             # runs per benchmark (cold start: at least 7 unless --quick)
    python bench/run.py --quick              # smoke run: few runs and calls, prints, writes nothing
    python bench/run.py --quick storage      # ... of one benchmark (sessions1000 and chat500 then use 100, storage 5)
    python bench/run.py --output other.md    # write elsewhere

Benchmarks: cold, calls, concurrency, images, streaming, soak, bombs, first, sessions1000, chat500, storage (the
last three are the load cases of issue 14 and take minutes each). Nothing here is a test: run it by hand, on an
otherwise idle machine when the figures matter.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import sys
import time
from pathlib import Path

from benchmarks import BENCHMARKS, QUICK, Plan, Row, import_report
from harness import ROOT, machine, warm_bytecode

DOC = ROOT / "docs" / "benchmarks.md"
LABELS = {
    "cold": "1.",
    "calls": "2.",
    "concurrency": "3.",
    "images": "4.",
    "streaming": "5.",
    "soak": "6.",
    "bombs": "7.",
    "first": "8.",
    "sessions1000": "9.",
    "chat500": "10.",
    "storage": "11.",
}
HEADER = (
    "| benchmark | metric | project | floor | project/floor | target | met | notes | measured |\n"
    "|---|---|---|---|---|---|---|---|---|"
)
SKELETON = """# Benchmarks

<!-- machine:start -->
<!-- machine:end -->

<!-- results:start -->
<!-- results:end -->

<!-- imports:start -->
<!-- imports:end -->
"""


def fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "–"
    digits = {"s": 3, "ms": 2, "%": 1}.get(unit, 0)
    return f"{value:,.{digits}f} {unit}"


def table_line(row: Row, stamp: str) -> str:
    ratio = f"{row.ratio:.2f}" if row.ratio is not None else "–"
    met = {True: "yes", False: "**no**", None: "–"}[row.met]
    cells = [row.bench, row.metric, fmt(row.project, row.unit), fmt(row.floor, row.unit), ratio, row.target, met]
    return "| " + " | ".join([*cells, row.note, stamp]) + " |"


def replace_block(text: str, name: str, body: str) -> str:
    pattern = re.compile(rf"<!-- {name}:start -->.*?<!-- {name}:end -->", re.S)
    return pattern.sub(lambda _: f"<!-- {name}:start -->\n{body}\n<!-- {name}:end -->", text)


def block(text: str, name: str) -> str:
    match = re.search(rf"<!-- {name}:start -->\n?(.*?)<!-- {name}:end -->", text, re.S)
    return match.group(1) if match else ""


def row_number(line: str) -> int:
    """The benchmark's number a table line starts with (`| 10. …`): 10 sorts after 9, not after 1."""
    return int(line[2:].split(".", 1)[0])


def write_doc(path: Path, chosen: list[str], lines: list[str], imports: list[str] | None, plan: Plan) -> None:
    text = path.read_text() if path.exists() else SKELETON
    kept = [
        line
        for line in block(text, "results").splitlines()
        if line.startswith("| ") and not line.startswith(("| benchmark", "|---"))
        if not any(line.startswith(f"| {LABELS[name]}") for name in chosen)
    ]
    rows = sorted(kept + lines, key=row_number)
    text = replace_block(text, "results", HEADER + "\n" + "\n".join(rows))
    info = machine()
    load = os.getloadavg()
    info["Last run"] = (
        f"{time.strftime('%Y-%m-%d %H:%M %Z')}: {', '.join(chosen)}; {plan.runs} runs "
        f"(cold start {plan.cold_runs}, concurrency {plan.concurrency_runs}); load average before it {load[0]:.2f}"
    )
    text = replace_block(text, "machine", "\n".join(f"- **{key}**: {value}" for key, value in info.items()))
    if imports is not None:
        text = replace_block(text, "imports", "\n".join(imports))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog="Benchmarks: " + ", ".join(BENCHMARKS))
    parser.add_argument("benchmarks", nargs="*", metavar="BENCHMARK", help="which to run (default: all)")
    parser.add_argument("--runs", type=int, help="runs per benchmark (default 5, concurrency 3; cold start ≥ 7)")
    parser.add_argument("--quick", action="store_true", help="smoke run: few runs and calls; writes nothing")
    parser.add_argument("--output", type=Path, help=f"file to write (default {DOC.relative_to(ROOT)})")
    args = parser.parse_args()
    unknown = set(args.benchmarks) - set(BENCHMARKS)
    if unknown:
        parser.error(f"unknown benchmark {', '.join(sorted(unknown))}; choose from {', '.join(BENCHMARKS)}")
    chosen = args.benchmarks or list(BENCHMARKS)
    plan = QUICK if args.quick else Plan()
    if args.runs:
        plan = dataclasses.replace(
            plan, runs=args.runs, cold_runs=max(args.runs, plan.cold_runs), concurrency_runs=args.runs
        )

    warm_bytecode()
    stamp = time.strftime("%Y-%m-%d")
    lines: list[str] = []
    imports = None
    for name in chosen:
        started = time.perf_counter()
        print(f"== {name}", file=sys.stderr, flush=True)
        rows = BENCHMARKS[name](plan)
        if name == "cold":
            extra, imports = import_report()
            rows += extra
        for row in rows:
            lines.append(table_line(row, stamp))
            print(lines[-1], flush=True)
        print(f"   ({time.perf_counter() - started:.0f} s)", file=sys.stderr, flush=True)
    if imports:
        print("\n".join(imports))
    if args.output or not args.quick:
        output = args.output or DOC
        write_doc(output, chosen, lines, imports, plan)
        print(f"wrote {output}", file=sys.stderr)


if __name__ == "__main__":
    main()
