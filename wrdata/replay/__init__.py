"""Replay: recordings through the same ``stream()`` API, deterministic, at any speed.

- ``DataStream.replay(root, speed=..., start=..., end=...)``: a ``DataStream`` over a
  recording (:class:`~wrdata.replay.source.ReplaySource`).
- :func:`read_batches`: the same total order as Arrow record batches, for vectorised
  backtests.
- ``wrdata replay`` prints a recording; ``wrdata replay serve`` serves it over a venue's
  own wire protocol (:mod:`wrdata.replay.serve`).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import pyarrow as pa

from .clock import ReplayClock
from .reader import Selection, everything, iter_windows, to_ns

__all__ = ["ReplayClock", "read_batches", "read_messages", "Selection", "to_ns"]


def read_batches(
    root: str,
    *,
    providers: Iterable[str] | None = None,
    symbols: Iterable[str] | None = None,
    kinds: Iterable[str] | None = None,
    start: Any = None,
    end: Any = None,
    window: float = 300.0,
    max_rows: int | None = None,
    filesystem: Any = None,
    journal: bool = True,
) -> Iterator[tuple[str, pa.RecordBatch]]:
    """``(table, RecordBatch)`` pairs of a recording in its total order.

    Consecutive rows of one table come as one batch (at most ``max_rows``); a book
    batch holds whole messages. Filters are pushed down to the scan.
    """
    sel = everything(root, filesystem, providers, symbols, kinds)
    for w in iter_windows(root, sel, to_ns(start), to_ns(end), window=window, filesystem=filesystem, journal=journal):
        yield from w.batches(max_rows)


def read_messages(root: str, **kwargs: Any) -> Iterator:
    """Messages of a recording in total order (venue messages: book deltas, not views)."""
    window = kwargs.pop("window", 300.0)
    filesystem = kwargs.pop("filesystem", None)
    journal = kwargs.pop("journal", True)
    start, end = to_ns(kwargs.pop("start", None)), to_ns(kwargs.pop("end", None))
    sel = everything(root, filesystem, kwargs.pop("providers", None), kwargs.pop("symbols", None), kwargs.pop("kinds", None))
    if kwargs:
        raise TypeError(f"unexpected arguments: {', '.join(kwargs)}")
    for w in iter_windows(root, sel, start, end, window=window, filesystem=filesystem, journal=journal):
        yield from w.messages()
