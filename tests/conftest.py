"""Shared fixtures: where the real Foyle/RunMe log samples live."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
TESTDATA = REPO.parent / "shared" / "testdata" / "foyle"


@pytest.fixture(scope="session")
def testdata() -> Path:
    """The shared, read-only sample logs (../shared/testdata/foyle beside the checkout)."""
    assert TESTDATA.is_dir(), f"missing shared testdata at {TESTDATA}"
    return TESTDATA
