"""Small SQLite helpers shared by the catalog and the embedding stores."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

# SQLite's default limit on bound parameters is 999 on older builds: stay well below it.
CHUNK = 500


def select_in(conn: sqlite3.Connection, sql: str, values: Iterable[Any], before: Sequence[Any] = ()) -> Iterator[tuple]:
    """Rows of `sql` for every chunk of `values`; `sql` holds one ``{marks}`` where the chunk's
    placeholders go (``... WHERE id IN ({marks})``), `before` the parameters that precede them."""
    unique = list(dict.fromkeys(values))
    for start in range(0, len(unique), CHUNK):
        chunk = unique[start : start + CHUNK]
        yield from conn.execute(sql.format(marks=",".join("?" * len(chunk))), [*before, *chunk])
