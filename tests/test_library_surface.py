"""The seed's functions are importable from their stage packages, typed and documented, and
importing a stage package stays light (no torch, ccxt or plotly until a function is used)."""

from __future__ import annotations

import importlib
import inspect
import subprocess
import sys

import pytest

SEED = {
    "coinrl.pipeline": (
        "fetch_data", "preprocess_data", "store_data", "update_data", "feature_engineering",
        "prepare_data_for_model",
    ),
    "coinrl.agents": (
        "train_model", "evaluate_model", "save_model", "load_model", "simulate_trading_strategy",
        "evaluate_strategy_performance", "optimize_parameters", "plot_backtest_results",
        "save_backtest_results",
    ),
    "coinrl.live": (
        "connect_to_exchange", "get_live_data", "execute_trade", "monitor_open_positions",
        "risk_management", "update_live_model", "log_trades", "terminate_trading",
    ),
}


@pytest.mark.parametrize(("package", "name"), [(p, n) for p, ns in SEED.items() for n in ns])
def test_seed_function_is_importable_typed_and_documented(package: str, name: str) -> None:
    mod = importlib.import_module(package)
    fn = getattr(mod, name)
    assert callable(fn)
    assert name in mod.__all__
    assert name in mod.SEED_FUNCTIONS
    doc = inspect.getdoc(fn) or ""
    assert len(doc) > 40, f"{package}.{name} has no real docstring"
    sig = inspect.signature(fn)
    untyped = [p for p, v in sig.parameters.items() if v.annotation is inspect.Parameter.empty]
    assert not untyped, f"{package}.{name}: untyped parameters {untyped}"
    assert sig.return_annotation is not inspect.Signature.empty, f"{package}.{name}: no return type"


def test_the_issue_import_line_works() -> None:
    from coinrl.agents import (  # noqa: F401
        evaluate_strategy_performance,
        optimize_parameters,
        plot_backtest_results,
        save_backtest_results,
        simulate_trading_strategy,
    )


@pytest.mark.slow
def test_importing_stage_packages_does_not_import_heavy_libraries() -> None:
    code = (
        "import sys, coinrl.pipeline, coinrl.agents, coinrl.live;"
        "heavy = [m for m in ('torch', 'stable_baselines3', 'ccxt', 'plotly', 'optuna', 'quantstats')"
        " if m in sys.modules]; print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert out.stdout.strip() == ""
