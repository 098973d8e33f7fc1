"""Overlap work on two cores: compute the next item of a stream in a background thread
while the caller works on the current one. DuckDB, Arrow and file I/O release the GIL,
so reading or typing chunk k+1 really runs beside Great Expectations checking chunk k."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Self, TypeVar

T = TypeVar("T")
_END = object()


class prefetched(Iterator[T]):
    """Iterate `items`, each computed one step ahead in a background thread; the first
    one starts right away. Errors surface where the item would have been yielded."""

    def __init__(self, items: Iterable[T]):
        self._items = iter(items)
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="winback-prefetch")
        self._pending: Future | None = self._pool.submit(next, self._items, _END)

    def __next__(self) -> T:
        if self._pending is None:
            raise StopIteration
        try:
            item = self._pending.result()
        except BaseException:
            self._close()
            raise
        if item is _END:
            self._close()
            raise StopIteration
        self._pending = self._pool.submit(next, self._items, _END)
        return item

    def _close(self) -> None:
        self._pending = None
        self._pool.shutdown(wait=True)

    def __del__(self) -> None:
        if self._pending is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)


class Background:
    """Run calls one after another in a background thread; `wait()` re-raises errors."""

    def __init__(self) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="winback-writer")
        self._futures: list[Future] = []

    def submit(self, function: Callable, *args) -> None:
        self._futures.append(self._pool.submit(function, *args))

    def wait(self) -> None:
        try:
            for future in self._futures:
                future.result()
        finally:
            self._pool.shutdown(wait=True)
            self._futures.clear()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        if exc[0] is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
        else:
            self.wait()
