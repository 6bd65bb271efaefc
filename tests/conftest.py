"""Shared fixtures: where the real Foyle/RunMe log samples live."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
TESTDATA = REPO.parent / "shared" / "testdata" / "foyle"


@pytest.fixture(scope="session")
def testdata() -> Path:
    """The shared, read-only sample logs (../shared/testdata/foyle beside the checkout)."""
    assert TESTDATA.is_dir(), f"missing shared testdata at {TESTDATA}"
    return TESTDATA


@pytest.fixture(autouse=True, scope="session")
def temporary_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """HOME in a temporary dir for every test and every subprocess it starts.

    Commands default to ~/.foyle/training, ~/.foyle/controller and the log dirs
    under ~; a test that forgets a flag must not write into the real ones.
    """
    home = tmp_path_factory.mktemp("home")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HOME", str(home))
        patch.delenv("FOYLECTL_STATE_DIR", raising=False)
        yield home
