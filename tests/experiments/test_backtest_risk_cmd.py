"""``coinrl backtest BUNDLE --risk FILE.yaml``: the RiskConfig file of ``coinrl paper/live
--risk`` applied to every backtest decision, recorded in the report, validated at load."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from coinrl.experiments.backtest_cmd import run_quickstart
from coinrl.experiments.cli import app
from coinrl.pipeline.errors import ConfigError

runner = CliRunner()


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("quick")
    run_quickstart(out, timesteps=2048)
    return out / "quickstart" / "bundle"


@pytest.mark.slow
def test_backtest_risk_file_caps_every_decision_and_is_recorded(bundle: Path, tmp_path: Path) -> None:
    risk = tmp_path / "risk.yaml"
    risk.write_text(yaml.safe_dump({"max_leverage": 0.25, "max_daily_loss_frac": None,
                                    "max_drawdown_frac": None}))
    cli = runner.invoke(app, ["backtest", str(bundle), "--risk", str(risk), "--out", str(tmp_path),
                              "--no-track"], terminal_width=200)
    assert cli.exit_code == 0, cli.output
    saved = json.loads((tmp_path / "quickstart-backtest-test" / "metrics.json").read_text())
    meta = saved["meta"]["risk"]
    assert meta["config"]["max_leverage"] == 0.25
    assert meta["counts"]["decisions"] == meta["counts"]["allowed"] + meta["counts"]["trimmed"] + (
        meta["counts"]["blocked"] + meta["counts"]["kill"])
    assert saved["policy"]["frac_long"] > 0  # the agent goes long, so the cap has work
    assert meta["by_rule"].get("max_leverage", 0) >= 1
    assert {e["rule"] for e in saved["risk_events"]} >= {"max_leverage"}
    # the same folder without --risk is another backtest: refused unless --overwrite
    again = runner.invoke(app, ["backtest", str(bundle), "--out", str(tmp_path), "--no-track"])
    assert isinstance(again.exception, ConfigError)


@pytest.mark.slow
def test_backtest_risk_file_with_an_unknown_key_fails_at_load(bundle: Path, tmp_path: Path) -> None:
    risk = tmp_path / "risk.yaml"
    risk.write_text("max_levrage: 0.5\n")
    cli = runner.invoke(app, ["backtest", str(bundle), "--risk", str(risk), "--out", str(tmp_path),
                              "--no-track"])
    assert isinstance(cli.exception, ConfigError)
    assert "max_levrage" in str(cli.exception)
    assert not list(tmp_path.glob("quickstart-backtest-*"))


def test_the_risk_file_is_read_as_the_bundle_kind(tmp_path: Path) -> None:
    from coinrl.envs.risk_portfolio import PortfolioRiskConfig
    from coinrl.experiments.portfolio_backtest_cmd import load_risk_config

    plain = tmp_path / "plain.yaml"
    plain.write_text("max_leverage: 0.5\n")
    pf = tmp_path / "pf.yaml"
    pf.write_text(yaml.safe_dump({"max_weight": 0.3, "asset_limits": {"ETH/BTC": {"stop_loss_frac": 0.05}}}))
    one = load_risk_config(plain)
    assert type(one).__name__ == "RiskConfig"
    assert one.max_leverage == 0.5
    promoted = load_risk_config(plain, ("ETH/BTC", "LTC/BTC"))  # a plain file serves a portfolio
    assert isinstance(promoted, PortfolioRiskConfig)
    assert promoted.max_leverage == 0.5
    many = load_risk_config(pf, ("ETH/BTC", "LTC/BTC"))
    assert isinstance(many, PortfolioRiskConfig)
    assert many.limit("ETH/BTC", "stop_loss_frac") == 0.05
    with pytest.raises(ConfigError, match="portfolio risk config .*asset_limits, max_weight"):
        load_risk_config(pf)  # a portfolio file for a one-symbol bundle
    with pytest.raises(ConfigError, match="ETH/BTC"):
        load_risk_config(pf, ("ADA/BTC",))
    typo = tmp_path / "typo.yaml"
    typo.write_text("max_wieght: 0.3\n")
    with pytest.raises(ConfigError, match="max_wieght"):
        load_risk_config(typo, ("ADA/BTC",))
