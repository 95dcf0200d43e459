"""Who may publish over RTMP, and what ingest converts (IngestPolicy, format_policy)."""

from __future__ import annotations

from pathlib import Path

import pytest

from dapsdk.node.config import load_node_config
from dapsdk.node.credentials import load_node_credentials
from dapsdk.node.sandbox import Sandbox
from dapsdk.services.media.ingest import IngestPolicy, format_policy
from dapsdk.services.media.rtmp_ingest import IngestRefused, PublishRequest


def request(name: str = "cam", token: str | None = None, host: str = "127.0.0.1") -> PublishRequest:
    return PublishRequest("live", name, token, host, {})


@pytest.fixture
def sandbox(tmp_path: Path) -> Sandbox:
    return Sandbox(tmp_path)


def policy(sandbox: Sandbox, **options: object) -> IngestPolicy:
    """The policy a node built from the sandbox's server config gets (its real token verifier)."""
    config = load_node_config(sandbox.server_config())
    verifier = load_node_credentials(config, now=sandbox.now).token_verifier
    assert verifier is not None
    return IngestPolicy(token_verifier=verifier, clock=lambda: sandbox.now, **options)  # type: ignore[arg-type]


def test_loopback_needs_no_token_by_default(sandbox: Sandbox) -> None:
    policy(sandbox).authorize(request())
    with pytest.raises(IngestRefused, match="a token is required"):
        policy(sandbox).authorize(request(host="192.0.2.7"))
    with pytest.raises(IngestRefused, match="a token is required"):
        policy(sandbox, loopback_no_credentials=False).authorize(request())
    policy(sandbox, token_required=False).authorize(request(host="192.0.2.7"))


def test_a_presented_token_must_verify_and_grant_publish(sandbox: Sandbox) -> None:
    rules = policy(sandbox)
    rules.authorize(request(token=sandbox.token("cam-1", content=("cam",), publish=True)))
    rules.authorize(request(host="192.0.2.7", token=sandbox.token("x", publish=True)))  # "*"
    with pytest.raises(IngestRefused, match="token refused"):
        rules.authorize(request(token="not.a.token"))
    with pytest.raises(IngestRefused, match="does not grant publish"):
        rules.authorize(request(token=sandbox.token("viewer", content=("cam",))))
    with pytest.raises(IngestRefused, match="does not grant publish"):
        rules.authorize(request(token=sandbox.token("c", content=("other",), publish=True)))
    expired = sandbox.token("c", publish=True, issued=sandbox.now - 7200, ttl=60)
    with pytest.raises(IngestRefused, match="token refused"):
        rules.authorize(request(token=expired))
    with pytest.raises(IngestRefused, match="verifies no tokens"):
        IngestPolicy().authorize(request(token="x"))


def test_format_policy_from_supported_formats() -> None:
    default = format_policy(["h264", "aac", "webm"])
    assert default.video == ("h264", "vp9", "vp8") and default.audio == ("aac", "opus")
    assert (default.video_encoder, default.audio_encoder) == ("libx264", "aac")
    mp4 = format_policy(["mp4"])
    assert mp4.video == ("h264",) and mp4.audio == ("aac",)
    webm = format_policy(["webm"])
    assert (webm.video_encoder, webm.audio_encoder) == ("libvpx-vp9", "libopus")
    assert format_policy(["h265", "opus"]).video == ("hevc",)
    with pytest.raises(ValueError, match="needs a video codec"):
        format_policy(["aac"])
