"""Every script in examples/ runs against a real local server and succeeds."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from .servers import stream_server

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"

EXPECTED_OUTPUT = {
    "basic_stream.py": "authorized=True primary=True",
    "channels.py": "Received packet type: 1, size: 13",
    "async_processing.py": "Read 6 bytes of type 1",
    "clusters.py": "1 member(s)",
    "custom_encrypted_channel.py": "opened here: b'card 4111-1111-1111-1111'",
    "monitoring.py": "Active channels: 2",
}


def test_every_example_is_listed() -> None:
    scripts = {p.name for p in EXAMPLES.glob("*.py") if not p.name.startswith("_")}
    stream_examples = {name for name in scripts if not name.startswith("avrs_")}
    assert stream_examples == set(EXPECTED_OUTPUT)


@pytest.fixture(scope="module")
def server_url() -> str:  # type: ignore[misc]
    with stream_server() as urls:
        yield urls[0].split("?")[0]


@pytest.mark.parametrize("script", sorted(EXPECTED_OUTPUT))
def test_example_runs(script: str, server_url: str) -> None:
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / script), server_url],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=EXAMPLES,
    )
    assert result.returncode == 0, result.stderr
    assert EXPECTED_OUTPUT[script] in result.stdout, result.stdout
