"""The figures table of ``docs/performance.md``, from the JSON lines ``derbridge bench`` printed.

``python -m derbridge.bench.report bench/results.jsonl`` prints the Markdown table; paste it between the
``<!-- figures -->`` markers of the page.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

HEADER = (
    "| scenario | database / transport | sizes | measured | rate | peak RSS | baseline (same run) | ratio | target |\n"
    "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"
)


def _sizes(sizes: dict[str, int]) -> str:
    return ", ".join(f"{v:,} {k}" for k, v in sizes.items())


def _measured(data: dict[str, Any]) -> str:
    details = data.get("details", {})
    if "p99_ms" in details:
        return f"{data['seconds']:.2f} s; p50 {details['p50_ms']:.1f} ms, p99 {details['p99_ms']:.1f} ms"
    if "median_cpu_seconds" in details:
        return f"{data['seconds']:.3f} s median start ({details['median_cpu_seconds']:.3f} s CPU)"
    return f"{data['seconds']:.2f} s"


def row(data: dict[str, Any]) -> str:
    """One table row for one result object (skipped and failed runs say so)."""
    if "skipped" in data or "error" in data:
        why = data.get("skipped") or data.get("error")
        return f"| {data['scenario']} | {data['backend']} | | not run: {why} | | | | | |"
    baseline = data.get("baseline")
    base = f"{baseline['what']}: {baseline['seconds']:.2f} s" if baseline else "—"
    ratio = f"{data['ratio']:.2f}" if data.get("ratio") is not None else "—"
    return (
        f"| {data['scenario']} | {data['database']} / {data['transport']} | {_sizes(data['sizes'])} "
        f"| {_measured(data)} | {data['rate']:,.0f} {data['unit']}/s | {data['peak_rss_mb']:,.0f} MB "
        f"| {base} | {ratio} | {data['target']} |"
    )


def table(results: Iterable[dict[str, Any]]) -> str:
    """The Markdown table of ``results``."""
    return "\n".join([HEADER, *(row(r) for r in results)])


def main(argv: Sequence[str] | None = None) -> int:
    """Print the table of the JSON lines in the file named by the first argument (stdin without one)."""
    args = list(sys.argv[1:] if argv is None else argv)
    text = Path(args[0]).read_text() if args else sys.stdin.read()
    results = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    print(table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
