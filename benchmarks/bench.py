"""Benchmark helpers: every benchmark script prints its figures and writes them into one
named section of BENCHMARKS.md (between ``<!-- BEGIN name -->`` and ``<!-- END name -->``),
so scripts can be rerun independently without clobbering each other's results."""

from __future__ import annotations

import os
import platform
import re
import tempfile
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS_MD = ROOT / "BENCHMARKS.md"


def machine_line() -> str:
    """One line naming the machine a figure was measured on."""
    try:
        import psutil

        mem = f"{psutil.virtual_memory().total / 2**30:.0f} GiB"
    except Exception:  # pragma: no cover - psutil is in requirements
        mem = "? GiB"
    return f"{platform.node() or 'host'}: {os.cpu_count()} cores, {mem}, {platform.machine()}, Python {platform.python_version()}"


def write_section(name: str, markdown: str, path: Path | str = BENCHMARKS_MD) -> Path:
    """Replace (or append) section ``name`` of BENCHMARKS.md with ``markdown``; atomic write."""
    path = Path(path)
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    block = (
        f"<!-- BEGIN {name} -->\n{markdown.rstrip()}\n\n"
        f"_Written {stamp} on {machine_line()}._\n<!-- END {name} -->"
    )
    text = path.read_text() if path.exists() else "# Benchmarks\n\nFigures written by the scripts in `benchmarks/`; rerun a script to refresh its section.\n"
    pattern = re.compile(rf"<!-- BEGIN {re.escape(name)} -->.*?<!-- END {re.escape(name)} -->", re.S)
    if pattern.search(text):
        text = pattern.sub(lambda _m: block, text)
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".bench-")
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.replace(tmp, path)
    return path
