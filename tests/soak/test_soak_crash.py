"""SIGKILL ``wrdata capture`` at random moments, again and again (tests/reliability/helpers.py,
``crash_campaign``): at least 50 kills in all, with unique and with fixed writer ids."""

from __future__ import annotations

import statistics

import pytest

from tests.reliability.helpers import crash_campaign

pytestmark = [pytest.mark.soak, pytest.mark.timeout(1800)]


@pytest.mark.parametrize("writer_id, kills, seed", [(None, 40, 101), ("soak-fixed", 20, 202)], ids=["unique-writers", "fixed-writer"])
async def test_sigkill_campaign(tmp_path, figures, writer_id, kills, seed):
    r = await crash_campaign(tmp_path, kills=kills, seed=seed, writer_id=writer_id, roll=0.5, max_alive=3.0)
    assert r.kills == kills and r.connected_kills >= kills // 2
    key = f"crash ({'fixed writer id' if writer_id else 'unique writer ids'})"
    figures[key] = {
        "kills survived": r.kills, "kills while recording": r.connected_kills, "rows recorded": r.rows, "files": r.files,
        "rows lost per kill (mean, max)": (round(statistics.mean(r.lost), 1), max(r.lost)) if r.lost else None,
        "lost window before the kill, s (max)": round(max(r.lost_window_s), 3) if r.lost_window_s else 0.0,
        "recoveries recorded": r.recovered_events,
    }
