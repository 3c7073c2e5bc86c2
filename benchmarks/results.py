"""benchmarks/RESULTS.md, written by the benchmarks themselves.

Each benchmark ends with ``results.main(__file__, main)``. Run with ``--write``, it prints
as usual and then replaces its own section of RESULTS.md with what it printed (its machine
line and tables, without the round-by-round progress), the command, the commit and the
date. A benchmark names its headline figures with ``headline(what, figure)``; the table at
the top of RESULTS.md, and README's performance table between its ``<!-- headline -->``
markers, are rebuilt from every section's headline rows, so both quote the latest runs
(``python benchmarks/results.py`` rebuilds them without running anything).
"""
from __future__ import annotations

import contextlib
import datetime
import io
import re
import subprocess
import sys
from pathlib import Path
from typing import Callable

HERE = Path(__file__).resolve().parent
RESULTS, README = HERE / "RESULTS.md", HERE.parent / "README.md"
_rows: list[tuple[str, str]] = []
MACHINE = re.compile(r"^machine: .*$", re.M)
HEADLINE = re.compile(r"^<!-- headline: (.*?) \| (.*?) -->$", re.M)
TOP = """# Benchmark results

Written by the benchmarks (`python benchmarks/NAME.py --write`), each in a section of its
own: the latest run's figures, its machine line (CPU, vector width, BLAS and its kernels
and threads, PyTorch's threads, nnlite's kernel path), command, commit and date. Ratios are
medians of per-round ratios, the contenders alternating round by round in one process. The
history of past runs is git's.
"""


def headline(what: str, figure: str) -> None:
    """Name one of this run's figures for the headline tables."""
    _rows.append((what, figure))


def main(script: str, run: Callable[[], None]) -> None:
    """Run the benchmark's ``run()``; with ``--write``, record its section."""
    write = "--write" in sys.argv
    if write:
        sys.argv.remove("--write")
    out = io.StringIO()
    with contextlib.redirect_stdout(_Tee(sys.stdout, out)):
        run()
    if write:
        name = Path(script).name
        printed = "\n".join(line for line in out.getvalue().splitlines()
                            if not line.startswith("  round ")).strip()
        command = " ".join(["python", f"benchmarks/{name}", *sys.argv[1:]])
        write_section(name, command, printed, list(_rows))


def write_section(name: str, command: str, printed: str, rows: list[tuple[str, str]]) -> None:
    """Replace (or add) section ``name`` of RESULTS.md; rebuild both headline tables."""
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=HERE,
                            capture_output=True, text=True).stdout.strip() or "unknown"
    date = datetime.date.today().isoformat()
    marks = "".join(f"<!-- headline: {what} | {figure} -->\n" for what, figure in rows)
    section = (f"## {name}\n\n{marks}`{command}` on commit {commit}, {date}.\n\n"
               f"```\n{printed}\n```\n")
    text = RESULTS.read_text() if RESULTS.exists() else TOP
    sections = {m.group(1): m.group(0) for m in
                re.finditer(r"^## (\S+)\n.*?(?=^## |\Z)", text, re.M | re.S)}
    sections[name] = section + "\n"
    write_tables("".join(sections[k] for k in sorted(sections)))


def _headline_table(body: str) -> str:
    """The headline rows of every section, with the date and machine of each run."""
    lines = ["| what | figure | run |", "|---|---:|---|"]
    for m in re.finditer(r"^## (\S+)\n(.*?)(?=^## |\Z)", body, re.M | re.S):
        when = re.search(r"on commit \S+, (\d{4}-\d\d-\d\d)\.", m.group(2))
        for what, figure in HEADLINE.findall(m.group(2)):
            lines.append(f"| {what} | {figure} | `{m.group(1)}`, {when.group(1) if when else ''} |")
    machines = sorted({line.removeprefix("machine: ") for line in MACHINE.findall(body)})
    return "\n".join(lines) + "\n\n" + "".join(f"Machine: {m}.\n" for m in machines)


def _update_readme(body: str) -> None:
    text = README.read_text()
    start, end = "<!-- headline -->\n", "<!-- /headline -->"
    if start in text and end in text:
        head, rest = text.split(start, 1)
        README.write_text(head + start + _headline_table(body) + rest[rest.index(end):])


def refresh() -> None:
    """Rebuild both headline tables from RESULTS.md as it stands."""
    body = RESULTS.read_text().split("\n## ", 1)[1]
    write_tables("## " + body)


def write_tables(body: str) -> None:
    RESULTS.write_text(TOP + "\n" + _headline_table(body) + "\n" + body.rstrip() + "\n")
    _update_readme(body)


class _Tee(io.TextIOBase):
    """Writes to two streams: the terminal and the record."""

    def __init__(self, *streams: io.TextIOBase):
        self.streams = streams

    def write(self, text: str) -> int:
        for stream in self.streams:
            stream.write(text)
        return len(text)

    def flush(self) -> None:
        for stream in self.streams:
            stream.flush()


if __name__ == "__main__":  # python benchmarks/results.py: the headline tables again
    refresh()
