"""Fixtures of the media tests: generated clips (tests/media/clips.py), made once per session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.media.clips import ClipSet


@pytest.fixture(scope="session")
def clips(tmp_path_factory: pytest.TempPathFactory) -> ClipSet:
    """The test clips, made on first use. pytest-xdist workers share one directory (the parent of
    their per-worker base temp), so each clip is encoded once per test run."""
    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        base = base.parent
    return ClipSet(Path(base))
