"""Render the reliability figures (tests/reliability/results.json, written by the suite) as the
table in docs/reliability.md:  .venv/bin/python -m tests.reliability.report"""
from __future__ import annotations

import json
import re
from pathlib import Path

HERE = Path(__file__).resolve().parent
DOC = HERE.parents[1] / "docs" / "reliability.md"
BEGIN, END = "<!-- figures: begin -->", "<!-- figures: end -->"


def table() -> str:
    results = json.loads((HERE / "results.json").read_text())
    rows = ["| scenario | runs | passed | outcomes | seconds | what was checked | run on |",
            "|---|---|---|---|---|---|---|"]
    for name, r in sorted(results.items()):
        outcomes = ", ".join(f"{k} {v}" for k, v in sorted((r.get("outcomes") or {}).items()))
        rows.append(f"| {name} | {r['runs']} | {r['passed']} | {outcomes} | {r['seconds']} | {r['checked']} | "
                    f"{r.get('session', '')} |")
    return "\n".join(rows)


def main() -> None:
    text = DOC.read_text()
    new = re.sub(re.escape(BEGIN) + ".*?" + re.escape(END), f"{BEGIN}\n{table()}\n{END}", text, flags=re.S)
    DOC.write_text(new)
    print(table())


if __name__ == "__main__":
    main()
