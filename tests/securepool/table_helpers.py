"""Agency tables for the csv tests: a numeric, a categorical and a numeric feature and a
string label, rows numbered from ``offset``."""

from __future__ import annotations

HEADER = "size,colour,weight,kind\n"
COLOURS = ["red", "white", "rose"]


def rows(n: int, offset: int = 0) -> str:
    return "".join(
        f"{offset + i}.5,{COLOURS[i % 3]},{(offset + i) * 10},{['cat', 'dog'][i % 2]}\n"
        for i in range(n)
    )
