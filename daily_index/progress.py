"""Progress of long in-process work, for whoever listens (the CLI's progress bars).

Emitting to Dagster's log for every KPI would cost an event-log write each; this hook
costs nothing when nobody listens (daemon and UI runs).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass


@dataclass(frozen=True)
class Progress:
    task: str
    done: int
    total: int
    item: str | None = None
    ok: bool = True


Listener = Callable[[Progress], None]
_listeners: list[Listener] = []


def emit(task: str, done: int, total: int, item: str | None = None, ok: bool = True) -> None:
    for listener in list(_listeners):
        listener(Progress(task, done, total, item, ok))


@contextmanager
def listening(listener: Listener) -> Iterator[None]:
    _listeners.append(listener)
    try:
        yield
    finally:
        _listeners.remove(listener)
