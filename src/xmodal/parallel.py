"""Bounded parallel map: decode ahead of the model without holding a whole folder in memory."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")


def bounded_map(
    pool: ThreadPoolExecutor,
    fn: Callable[[T], R],
    args: Iterable[T],
    ahead: int,
    on_wait: Callable[[], None] | None = None,
) -> Iterator[R]:
    """`pool.map(fn, args)` in order, but with at most `ahead` tasks in flight (bounded memory).

    `on_wait`, when given, is called each time the next result is not ready yet, before waiting
    for it: the consumer can use the time (the indexer runs the encoder on a partial batch).
    """
    pending: deque[Future[R]] = deque()

    def next_result() -> R:
        head = pending.popleft()
        if on_wait is not None and not head.done():
            on_wait()
        return head.result()

    for arg in args:
        pending.append(pool.submit(fn, arg))
        if len(pending) >= ahead:
            yield next_result()
    while pending:
        yield next_result()
