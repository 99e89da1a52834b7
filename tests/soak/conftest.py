"""The soak run's figures: each test adds what it measured to the session's ``figures``;
they are printed at the end of the run (and written as JSON to $WRDATA_SOAK_REPORT)."""

from __future__ import annotations

import json
import os

import pytest

_FIGURES: dict = {}


@pytest.fixture(scope="session")
def figures() -> dict:
    return _FIGURES


def pytest_terminal_summary(terminalreporter) -> None:
    if not _FIGURES:
        return
    terminalreporter.section("wrdata soak figures")
    for key, value in _FIGURES.items():
        terminalreporter.write_line(f"{key}: {json.dumps(value, default=str)}")
    path = os.environ.get("WRDATA_SOAK_REPORT")
    if path:
        with open(path, "w") as f:
            json.dump(_FIGURES, f, indent=2, default=str)
        terminalreporter.write_line(f"written to {path}")
