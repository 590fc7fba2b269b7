"""docs/PERFORMANCE.md: each benchmark refreshes only its own generated block.

A benchmark's figures live between ``<!-- bench:NAME:begin -->`` and
``<!-- bench:NAME:end -->`` inside its own ``## Title`` section; the prose around the
markers is written by hand and left alone. A missing section is appended.
"""

from __future__ import annotations

import re
from pathlib import Path

PERFORMANCE_MD = Path(__file__).resolve().parent.parent / "docs" / "PERFORMANCE.md"

HEADER = """# Performance

Figures measured by the benchmarks in `bench/` (benchmarks, not tests: nothing
asserts on timings). `make bench` runs them all with their default sizes;
`.venv/bin/python -m bench --help` lists them and their options.

Each benchmark has its own section below. The block between
`<!-- bench:NAME:begin -->` and `<!-- bench:NAME:end -->` is rewritten by
`python -m bench NAME --write-docs`; the text around it is written by hand.
"""


def _markers(name: str) -> tuple[str, str]:
    return f"<!-- bench:{name}:begin -->", f"<!-- bench:{name}:end -->"


def write_section(name: str, title: str, body: str, path: Path = PERFORMANCE_MD) -> None:
    begin, end = _markers(name)
    block = f"{begin}\n{body.strip()}\n{end}"
    text = path.read_text() if path.exists() else HEADER
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.DOTALL)
    if pattern.search(text):
        text = pattern.sub(lambda _match: block, text, count=1)
    else:
        text = text.rstrip("\n") + f"\n\n## {title}\n\n{block}\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text if text.endswith("\n") else text + "\n")
