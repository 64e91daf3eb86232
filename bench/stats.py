"""Medians with min and max, and the table `make bench` prints."""

import statistics


def summary(values):
    """{"median", "min", "max", "runs"} of the numbers (None values are dropped)."""
    numbers = [v for v in values if v is not None]
    if not numbers:
        return {"median": None, "min": None, "max": None, "runs": 0}
    return {"median": round(statistics.median(numbers), 3), "min": round(min(numbers), 3),
            "max": round(max(numbers), 3), "runs": len(numbers)}


def ratio(numerator, denominator):
    """numerator / denominator of two summaries' medians (None if either is missing)."""
    top, bottom = numerator.get("median"), denominator.get("median")
    return round(top / bottom, 3) if top is not None and bottom else None


def cell(stat, unit="s"):
    """`1.234 s (1.1-1.4)` for a summary."""
    if stat.get("median") is None:
        return "n/a"
    return f"{stat['median']:.3f} {unit} ({stat['min']:.3f}-{stat['max']:.3f})"


def table(rows):
    """Rows of strings as aligned columns (first row is the header)."""
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
