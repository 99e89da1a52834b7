"""Many thousands of hostile frames per parser (tests/reliability/fuzz.py)."""

from __future__ import annotations

import os

import pytest

from tests.reliability.fuzz import TARGETS, run_fuzz

pytestmark = [pytest.mark.soak, pytest.mark.timeout(1800)]

CASES = int(os.environ.get("WRDATA_FUZZ_CASES", "5000"))


@pytest.mark.parametrize("venue", list(TARGETS))
def test_fuzz(venue, figures):
    r = run_fuzz(venue, examples=CASES, seed=int.from_bytes(os.urandom(4), "big"))
    assert r.cases == CASES
    figures.setdefault("fuzz", {})[venue] = {
        "cases": r.cases, "bad frames": r.bad_frames, "kinds": len(r.kinds), "by mutation": r.by_mutation,
        "venue recreated (id near 2**63 planted)": r.resets, "refusals": r.refusals,
    }
    figures["fuzz"]["total cases"] = sum(v["cases"] for k, v in figures["fuzz"].items() if isinstance(v, dict))
