"""Numbers as a person reads them in a table or a UI: three significant digits, never scientific
notation (3.855e-16) and never a zero that is not one (0.0000)."""

from __future__ import annotations

SMALLEST_SHOWN = 0.001  # below this a score reads "<0.001": its digits say nothing a reader acts on


def significant(value: float | int | None, digits: int = 3) -> str:
    """`value` to `digits` significant digits: 0.96523 -> "0.965", 3.855e-16 -> "<0.001",
    1234.5 -> "1,234" (whole numbers from 1000 up), an int as it is, None as "-"."""
    if value is None:
        return "-"
    if isinstance(value, int):  # bool included: counts and flags are exact
        return str(value) if isinstance(value, bool) else f"{value:,}"
    if value != value:  # NaN
        return "n/a"
    if value == 0:
        return "0"
    if abs(value) < SMALLEST_SHOWN:
        return f"<{SMALLEST_SHOWN:g}" if value > 0 else f">-{SMALLEST_SHOWN:g}"
    shown = f"{value:.{digits}g}"
    return f"{value:,.0f}" if "e" in shown else shown  # 1234.5 and 999.7 (rounds to 1e+03) alike
