"""Bounded look-ahead: decode ahead of the model without holding a whole folder (or video) in memory."""

from __future__ import annotations

import queue
import threading
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


_DONE = object()


def prefetch(items: Iterable[T], ahead: int) -> Iterator[T]:
    """Iterate `items` on a background thread, at most `ahead` items ahead of the consumer.

    The producer's exceptions are raised in the consumer at the point they happened; when the
    consumer stops early (break, exception, close) the producer stops too and its iterator is closed.
    """
    buffer: queue.Queue = queue.Queue(maxsize=max(1, ahead))
    stop = threading.Event()

    def put(item: object) -> bool:
        while not stop.is_set():
            try:
                buffer.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        iterator = iter(items)
        try:
            for item in iterator:
                if not put((item, None)):
                    return
            put((_DONE, None))
        except BaseException as exc:  # handed to the consumer, raised there
            put((_DONE, exc))
        finally:
            close = getattr(iterator, "close", None)
            if close is not None:
                close()

    worker = threading.Thread(target=produce, name="prefetch", daemon=True)
    worker.start()
    try:
        while True:
            item, error = buffer.get()
            if item is _DONE:
                if error is not None:
                    raise error
                return
            yield item
    finally:
        stop.set()
        worker.join()
