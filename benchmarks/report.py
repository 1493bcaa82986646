"""The results table: rows with a value, what it is compared with, the ratio, the target, pass/miss.

The same rows are printed as a fixed-width table, written as Markdown (``results.md``) and kept
in ``results.json`` with every raw timing.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass
class Row:
    measurement: str
    value: str
    cpu: str = ""
    compared_with: str = ""
    ratio: str = ""
    target: str = ""
    result: str = ""
    #: numbers for results.json
    ratio_value: float | None = None
    target_value: float | None = None

    def as_dict(self) -> dict:
        return asdict(self)


def at_most(ratio: float, limit: float) -> tuple[str, str, str]:
    """(ratio text, target text, pass/miss) for a ratio that must stay at or below ``limit``."""
    return f"{ratio:.2f}x", f"<= {limit:g}x", "pass" if ratio <= limit else "MISS"


def at_least(ratio: float, limit: float) -> tuple[str, str, str]:
    """The same for a speed-up that must reach ``limit``."""
    return f"{ratio:.1f}x faster", f">= {limit:g}x faster", "pass" if ratio >= limit else "MISS"


HEADERS = ("measurement", "wall: median (min)", "CPU (vs floor)", "compared with", "ratio", "target", "result")


def _cells(row: Row) -> tuple[str, ...]:
    return (row.measurement, row.value, row.cpu, row.compared_with, row.ratio, row.target, row.result)


def as_text(rows: list[Row | str]) -> str:
    """A fixed-width table; a plain string in ``rows`` is a section heading."""
    cells = [_cells(r) for r in rows if isinstance(r, Row)]
    widths = [max([len(h)] + [len(c[i]) for c in cells]) for i, h in enumerate(HEADERS)]
    line = lambda values: "  ".join(v.ljust(w) for v, w in zip(values, widths, strict=True)).rstrip()  # noqa: E731
    out = [line(HEADERS), line(["-" * w for w in widths])]
    for row in rows:
        out.append(f"[{row}]" if isinstance(row, str) else line(_cells(row)))
    return "\n".join(out)


def as_markdown(rows: list[Row | str]) -> str:
    escape = lambda text: text.replace("|", "\\|")  # noqa: E731
    out = ["| " + " | ".join(HEADERS) + " |", "|" + "---|" * len(HEADERS)]
    for row in rows:
        if isinstance(row, str):
            out.append(f"| **{escape(row)}** |" + " |" * (len(HEADERS) - 1))
        else:
            out.append("| " + " | ".join(escape(c) for c in _cells(row)) + " |")
    return "\n".join(out)
