"""Fixtures for storage tests (helpers are in storage_helpers.py)."""

from __future__ import annotations

import pytest

from wrdata.storage import DatasetWriter


@pytest.fixture
def make_writer(tmp_path):
    writers: list[DatasetWriter] = []

    def make(root=None, **kw) -> DatasetWriter:
        kw.setdefault("flush_interval", 0.02)
        kw.setdefault("retry_interval", 0.02)
        kw.setdefault("roll_interval", 30 * 86400)  # no hourly roll in the middle of a test
        w = DatasetWriter(root or tmp_path / "data", **kw)
        writers.append(w)
        return w

    yield make
    for w in writers:
        w.close(timeout=5)
