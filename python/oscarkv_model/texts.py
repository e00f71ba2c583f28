"""Text sources, kept apart: calibration never sees evaluation text.

calibration: Debian package python3.11-doc, the reStructuredText sources that the
             HTML docs ship under /usr/share/doc/python3.11/html/_sources/ (plain text;
             files in sorted path order, whole files, separated by blank lines).
evaluation:  Debian packages bible-kjv-text + bible-kjv: the King James Bible, dumped
             with `bible -f gen1:1-rev22:21`, verse references stripped, one verse a line.

    apt-get install python3.11-doc bible-kjv bible-kjv-text
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

PYDOC_SOURCES = Path("/usr/share/doc/python3.11/html/_sources")
_REF = re.compile(r"^\S+?\d+:\d+ ")


def python_doc_files(root: Path = PYDOC_SOURCES) -> list:
    files = sorted(p for p in root.rglob("*.txt") if p.is_file())
    if not files:
        raise FileNotFoundError(f"no text under {root}: apt-get install python3.11-doc")
    return files


def calibration_text(max_chars: int | None = None, root: Path = PYDOC_SOURCES) -> str:
    """Python 3.11 documentation text, concatenated in sorted file order."""
    parts, total = [], 0
    for p in python_doc_files(root):
        t = p.read_text(encoding="utf-8", errors="replace").strip()
        if not t:
            continue
        parts.append(t)
        total += len(t) + 2
        if max_chars is not None and total >= max_chars:
            break
    s = "\n\n".join(parts)
    return s if max_chars is None else s[:max_chars]


def evaluation_text(max_chars: int | None = None, first: str = "gen1:1", last: str = "rev22:21") -> str:
    """King James Bible text (verse references removed), Genesis onwards."""
    try:
        out = subprocess.run(
            ["bible", "-f", f"{first}-{last}"], stdin=subprocess.DEVNULL, capture_output=True, text=True, check=True
        ).stdout
    except FileNotFoundError as e:
        raise FileNotFoundError("`bible` not found: apt-get install bible-kjv bible-kjv-text") from e
    lines = [_REF.sub("", ln) for ln in out.splitlines() if ln.strip()]
    s = "\n".join(lines)
    return s if max_chars is None else s[:max_chars]
