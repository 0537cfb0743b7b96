"""How counts are written in what cgh prints: ``counted(1, "step")`` is "1 step", ``counted(2, "step")`` "2 steps"
("done: 1 steps" read as a slip, and "image(s)" as a shrug)."""

from __future__ import annotations


def counted(n: int | float, noun: str, plural: str | None = None) -> str:
    """``n`` and ``noun`` in the number ``n`` takes: 1 step, 0 steps, 2 classes, 3 queries, 1.5 epochs. ``plural``
    for a noun the rule below gets wrong."""
    text = f"{n:g}" if isinstance(n, float) else str(n)
    return f"{text} {noun if n == 1 else plural or _plural(noun)}"


def _plural(noun: str) -> str:
    head, _, last = noun.rpartition(" ")  # "corrupt image" -> "corrupt images"
    if last.endswith(("s", "x", "sh")):  # not "ch": epoch -> epochs (batch: pass plural="batches")
        last += "es"
    elif last.endswith("y") and last[-2:-1] not in ("a", "e", "i", "o", "u"):
        last = last[:-1] + "ies"
    else:
        last += "s"
    return f"{head} {last}" if head else last
