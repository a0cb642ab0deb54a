"""The slow session tests of the live matrix on the emulator's second dialect (Bybit v5): the
SIGKILL crash-recovery run, the runner under each fault, the paper/live/backtest parity run
and the secrets scan of a whole
live session, exactly as they run on Binance (their modules are reused unchanged; only the
exchange id differs)."""

from __future__ import annotations

import functools
from typing import Any

import pytest
import test_crash_recovery as crash
import test_faults_runner as faults_runner
import test_parity as parity
import test_secrets as secrets
from live_helpers import KEY, ORDER_PATHS, SECRET, connect
from test_faults_runner import fast_retries, prepared  # noqa: F401 - the faults run's fixtures
from test_parity import agent, backtest, frame  # noqa: F401 - the parity run's fixtures

pytestmark = pytest.mark.slow

BYBIT_ORDER = ORDER_PATHS["bybit"]
BYBIT_FAULTS: dict[str, Any] = {  # test_faults_runner.FAULTS on Bybit's paths
    "latency": lambda f: f.latency(25.0, probability=0.5, path_prefix="/v5"),
    "rate_limit_429": lambda f: f.rate_limit(retry_after_s=0, count=None, probability=0.3,
                                             path_prefix=BYBIT_ORDER),
    "server_error_5xx": lambda f: f.server_error(503, count=None, probability=0.3, path_prefix="/v5"),
    "drop_before": lambda f: f.drop(count=None, probability=0.3, path_prefix=BYBIT_ORDER),
    "drop_after_accept": lambda f: f.drop_after(probability=0.4, path_prefix=BYBIT_ORDER),
    "partial_fill": lambda f: f.partial_fill(0.5, probability=0.5),
    "reject": lambda f: f.reject(probability=0.4, path_prefix=BYBIT_ORDER),
    "stale_data": lambda f: f.stale(after=10, path_prefix="/v5/market/kline"),
}


def test_sigkilled_runner_on_bybit_restarts_without_duplicates_or_lost_fills(tmp_path, monkeypatch):
    child = crash.CHILD.replace("exchange_url=url,", 'exchange="bybit", exchange_url=url,')
    assert child != crash.CHILD
    monkeypatch.setattr(crash, "CHILD", child)
    monkeypatch.setattr(crash, "connect", functools.partial(connect, exchange="bybit"))
    # Bybit has no "expired": a spot market order whose unaffordable rest lapsed after a partial
    # fill is PartiallyFilledCanceled, which ccxt reports as closed (every order here has fills)
    monkeypatch.setattr(crash, "EXCHANGE_STATUS", {**crash.EXCHANGE_STATUS, "EXPIRED": "closed"})
    crash.test_sigkilled_runner_restarts_without_duplicates_or_lost_fills(tmp_path)


def test_no_key_or_secret_in_the_files_of_a_bybit_session(tmp_path, request, monkeypatch):
    from coinrl.experiments.live_cmd import run_session

    def on_bybit(*args: Any, **kwargs: Any) -> Any:
        return run_session(*args, exchange="bybit", **kwargs)

    monkeypatch.setenv("COINRL_BYBIT_API_KEY", KEY)
    monkeypatch.setenv("COINRL_BYBIT_API_SECRET", SECRET)
    monkeypatch.setattr(secrets, "run_session", on_bybit)
    secrets.test_no_key_or_secret_in_logs_journal_wandb_or_bundle(tmp_path, request, monkeypatch)


def test_paper_and_live_sessions_on_bybit_equal_the_backtest(
    agent, frame, backtest, tmp_path, monkeypatch,  # noqa: F811 - fixtures from test_parity
):
    from coinrl.live.data import public_client

    def bybit_public(server: Any) -> Any:
        return public_client("bybit", exchange_url=server.base_url, config={"enableRateLimit": False})

    monkeypatch.setattr(parity, "connect", functools.partial(connect, exchange="bybit"))
    monkeypatch.setattr(parity, "public", bybit_public)
    parity.test_paper_and_live_sessions_equal_the_backtest(agent, frame, backtest, tmp_path)


@pytest.mark.parametrize("fault", list(BYBIT_FAULTS))
def test_the_runner_on_bybit_survives_each_fault_without_duplicates_or_lost_fills(
    fault, prepared, tmp_path, monkeypatch,  # noqa: F811 - fixture from test_faults_runner
):
    assert set(BYBIT_FAULTS) == set(faults_runner.FAULTS)
    monkeypatch.setattr(faults_runner, "FAULTS", BYBIT_FAULTS)
    monkeypatch.setattr(faults_runner, "connect", functools.partial(connect, exchange="bybit"))
    faults_runner.test_the_runner_survives_each_fault_without_duplicates_or_lost_fills(
        fault, prepared, tmp_path)
