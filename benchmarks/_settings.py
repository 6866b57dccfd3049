"""``--set NAME=VALUE`` for the benchmarks (``python benchmarks/<name>.py``, which puts this folder on the path)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any


def parse_settings(pairs: Iterable[str], known: Iterable[str], what: str) -> dict[str, Any]:
    """``NAME=VALUE`` pairs as keyword arguments (values read as JSON: true, 0.2, {"qa": 2}; else kept as strings),
    each ``NAME`` one of ``known``; a bad pair stops the benchmark with a message naming it and the ``what`` names."""
    names = sorted(known)
    out: dict[str, Any] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or name not in names:
            raise SystemExit(f"--set {pair!r}: expected {what}=VALUE with {what} one of {names}")
        try:
            out[name] = json.loads(value)
        except json.JSONDecodeError:
            out[name] = value
    return out
