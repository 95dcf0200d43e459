"""`avrs demo` (what `make demo` runs) works end to end and reports what really happened."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys

from playwright.async_api import async_playwright

from tests.gateway.test_gateway_browser import CHROMIUM, FLAGS


async def test_demo_runs_the_whole_cluster_and_every_client_decodes() -> None:
    """One process: host, balancer, two servers with gateways, an operator; live, VoD and
    interactive contents; viewers through the balancer. While it runs, headless Chromium sees
    every node on the dashboard; at the end the JSON summary shows every client decoding."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "dapsdk.cli", "demo", "--duration", "20", "--json",
        "--http-port", "0",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert proc.stderr is not None and proc.stdout is not None
    dashboard, nodes = "", []
    try:
        while True:
            line = (await asyncio.wait_for(proc.stderr.readline(), 60)).decode()
            assert line, "demo exited before printing its URLs"
            if line.startswith("dashboard"):
                dashboard = line.split()[1]
            elif line.startswith("node "):
                nodes.append(line.split()[-1])
            elif line.startswith("running"):
                break
        assert dashboard.startswith("http://127.0.0.1:") and len(nodes) == 5
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
            page = await browser.new_page()
            await page.goto(dashboard)
            for address in nodes:
                await page.wait_for_selector(
                    f"tr.node-row[data-address='{address}']", timeout=20_000
                )
            # server 1's gateway serves the live broadcast
            await page.wait_for_selector("tr.content-row >> text=demo-live", timeout=10_000)
            await browser.close()
        out, err = await asyncio.wait_for(proc.communicate(), 90)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0, err.decode()[-2000:]
    report = json.loads(out)
    roles = sorted(role for n in report["nodes"] for role in n["roles"])
    assert roles == ["balancer", "host", "operator", "server", "server"]
    assert all(n["address"] for n in report["nodes"])
    assert {c["type"] for c in report["contents"]} == {"live", "vod", "interactive"}
    assert report["http"].startswith("http://127.0.0.1:")
    assert len(report["clients"]) == 3
    for client in report["clients"]:
        assert client["error"] is None, client
        assert client["frames_received"] > 30, client
        assert client["frames_decoded"] >= client["frames_received"] - 2, client
        assert client["first_frame_ms"] is not None and client["first_frame_ms"] > 0
        assert client["rendition_switches"] == 0 and client["forged"] == 0
        assert client["balanced_to"].startswith("tcp://127.0.0.1:"), client  # REDIRECT followed


def test_transport_walkthrough_runs_a_stream_exchange_and_an_avrs_server() -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "dapsdk.cli",
            "demo",
            "--transport",
            "--json",
            "--file-size",
            "1000000",
            "--frames",
            "30",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert all(count > 0 for count in report["callbacks"].values()), report["callbacks"]
    assert report["client_stats"]["bytes_sent"] > 1_000_000
    # everything but packets still in flight when the stats were taken (a keepalive)
    assert (
        1_000_000 < report["server_stats"]["bytes_received"] <= report["client_stats"]["bytes_sent"]
    )
    avrs = report["avrs"]
    assert avrs["frames_published"] == 30
    assert avrs["frames_received"] == avrs["signatures_verified"] == 30
    assert avrs["pictures_decoded"] == 30 and avrs["picture_size"] == [320, 180]
    assert avrs["keyframes"] >= 1
    assert avrs["expired_token"].startswith("MEMBER_SECURITY_ISSUE")
