"""A flood of refused handshakes is not a flood of log lines."""

from __future__ import annotations

import logging

import pytest

from dapsdk.runtime.node import REFUSAL_LOG_PER_SECOND, _LogBudget


def test_refusal_log_budget_per_second(caplog: pytest.LogCaptureFixture) -> None:
    budget = _LogBudget(REFUSAL_LOG_PER_SECOND)
    allowed = sum(budget.allow(100.0 + i / 10_000) for i in range(5000))
    assert allowed == REFUSAL_LOG_PER_SECOND
    with caplog.at_level(logging.INFO, logger="dapsdk.runtime.node"):
        assert budget.allow(101.5)  # a new window: allowed again, and the summary is logged
    summary = [r for r in caplog.records if "not logged" in r.getMessage()]
    assert len(summary) == 1 and summary[0].suppressed == 5000 - REFUSAL_LOG_PER_SECOND  # type: ignore[attr-defined]
