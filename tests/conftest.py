import json
from pathlib import Path

import pytest

DATA = Path(__file__).parent / "data"


def load_frames(relpath: str) -> list[dict]:
    """Recorded frames: one JSON object per line with ts_recv, url, frame (see data/SOURCES.md)."""
    out = []
    with open(DATA / relpath) as f:
        for line in f:
            if line.strip():
                out.append(json.loads(line))
    return out


def ts_ns(row: dict, i: int) -> int:
    """Sample files hold float seconds, integer ns, or null; tests need increasing ns."""
    t = row.get("ts_recv")
    if t is None:
        return 1_700_000_000_000_000_000 + i * 1000
    if isinstance(t, float):
        return int(t * 1e9)
    return int(t)


@pytest.fixture
def data_dir() -> Path:
    return DATA
