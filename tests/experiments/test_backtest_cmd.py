"""run_quickstart / run_backtest / run_walkforward / run_report end to end on the packaged sample."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from coinrl.agents.backtest import simulate_trading_strategy
from coinrl.agents.report import save_backtest_results
from coinrl.agents.walkforward import save_walk_forward, summarise
from coinrl.experiments import backtest_cmd
from coinrl.experiments.backtest_cmd import (
    quickstart_config,
    run_backtest,
    run_quickstart,
    run_report,
    run_walkforward,
)
from coinrl.experiments.cli import app
from coinrl.pipeline.errors import ConfigError, DataError
from coinrl.pipeline.synthetic import planted_pattern

runner = CliRunner()
REPORT = {"report.html", "backtest.png", "equity.parquet", "fills.parquet", "metrics.json", "fills.csv",
          "trades.csv"}


def _same(a: float | None, b: float | None) -> bool:
    return a == b or (a is not None and b is not None and math.isnan(a) and math.isnan(b))


@pytest.mark.slow
def test_run_report_finds_the_kind_of_folder(tmp_path: Path) -> None:
    candles = planted_pattern(600, seed=2)
    res = simulate_trading_strategy(np.sign(candles["signal"].to_numpy()), candles, n_random=1)
    single = save_backtest_results(res, tmp_path / "single" / "report")
    (single / "report.html").unlink()
    assert run_report(single) == single / "report.html"
    assert run_report(tmp_path / "single") == single / "report.html"  # the one folder inside
    wf = save_walk_forward(summarise([[res]], [0]), tmp_path / "wf")
    (wf / "report.html").unlink()
    assert run_report(wf) == wf / "report.html"
    assert (wf / "report.html").is_file()
    with pytest.raises(DataError, match="no backtest or walk-forward results"):
        run_report(tmp_path / "single" / "report" / "missing")


@pytest.mark.slow
def test_walkforward_table_says_short_sample_as_its_page_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from coinrl.experiments.console import console

    # two test folds of 300 hourly bars: together far too short to annualise
    results = []
    for seed in (1, 2):
        candles = planted_pattern(300, seed=seed)
        results.append([simulate_trading_strategy(np.sign(candles["signal"].to_numpy()), candles, n_random=1)])
    wf = summarise(results, [0])
    assert wf.summary["agent"]["annualised_return"]["aggregate"] == 1.0
    page = (save_walk_forward(wf, tmp_path / "wf") / "report.html").read_text()
    monkeypatch.setattr(console, "width", 240)
    with console.capture() as cap:
        backtest_cmd.print_walkforward(wf)
    table = cap.get()
    row = next(line for line in table.splitlines() if "ann. return" in line)
    assert row.count("n/a (short sample)") == len(wf.summary)  # every strategy, as on the page
    page_row = next(r for r in page.split("<tr>") if r.startswith("<td>annualised return"))
    assert page_row.count("n/a (short sample)") == len(wf.summary)


def test_quickstart_config_is_small_and_validated() -> None:
    cfg = quickstart_config(4096)
    assert cfg.data.source == "sample"
    assert cfg.train.algo == "ppo"
    assert cfg.train.total_timesteps == 4096
    assert cfg.tracking.mode == "disabled"
    with pytest.raises(ConfigError, match="2,048"):
        quickstart_config(100)


@pytest.mark.slow
def test_quickstart_then_backtest_the_bundle_reproduces_the_report(tmp_path: Path, shared_data: Path) -> None:
    stages: list[str] = []
    report = run_quickstart(tmp_path, timesteps=2048, progress=lambda s, d, n: stages.append(s))
    assert report == tmp_path / "quickstart" / "report"
    assert {p.name for p in report.iterdir()} == REPORT
    assert stages[0] == "data"
    assert stages[-1] == "report"
    assert "train" in stages
    assert "backtest" in stages
    quick = json.loads((report / "metrics.json").read_text())
    assert quick["meta"]["split"] == "test"
    assert set(quick["baselines"]) == {"buy_and_hold", "flat", "ma_crossover", "random"}
    assert len(quick["verdicts"]) == 4
    bundle = tmp_path / "quickstart" / "bundle"

    # coinrl backtest BUNDLE --split test: the same bars, the same numbers
    folder, res = run_backtest(bundle, split="test", out_dir=tmp_path / "bt", track=False)
    assert folder == tmp_path / "bt" / "quickstart-backtest-test"
    assert {p.name for p in folder.iterdir()} == REPORT
    assert res.meta["data_matches_bundle"] is True
    assert all("out of sample (held-out test split) after costs" in v for v in res.verdict_lines())
    for key, value in quick["metrics"].items():
        assert _same(json.loads(json.dumps(res.to_dict()))["metrics"][key], value), key
    assert res.meta["market_fingerprint"] == quick["meta"]["market_fingerprint"]

    # the CLI: coinrl backtest BUNDLE --data FILE --split full: another exchange's candles get
    # the bundle's features and normaliser; the table, the verdicts and the report path printed
    other = shared_data / "btc_usd_1h_coinbase.csv"
    out2 = tmp_path / "bt2"
    cli = runner.invoke(
        app, ["backtest", str(bundle), "--data", str(other), "--split", "full", "--out", str(out2), "--no-track"],
        terminal_width=200,
    )
    assert cli.exit_code == 0, cli.output
    folder2 = out2 / "quickstart-backtest-btc_usd_1h_coinbase-full"
    assert f"report: {folder2 / 'report.html'}" in cli.output
    assert "buy_and_hold" in cli.output
    # the verdict lines say what the data was: other candles, not "out of sample" outright
    assert "on other candles (full split; out of sample only if" in cli.output
    saved = json.loads((folder2 / "metrics.json").read_text())
    assert saved["meta"]["data_matches_bundle"] is False
    assert saved["meta"]["source"] == str(other)
    assert saved["meta"]["n_decisions"] > 10_000
    fills = pd.read_parquet(folder2 / "fills.parquet")
    assert len(fills) == saved["metrics"]["n_fills"]

    # coinrl report FOLDER redraws the page from the tables alone
    (folder2 / "report.html").unlink()
    cli = runner.invoke(app, ["report", str(folder2)], terminal_width=200)
    assert cli.exit_code == 0, cli.output
    assert (folder2 / "report.html").is_file()

    # errors are the taxonomy's, raised before any work
    with pytest.raises(ConfigError, match="split"):
        run_backtest(bundle, split="holdout")
    cli = runner.invoke(app, ["backtest", str(bundle), "--split", "holdout", "--no-track"])
    assert isinstance(cli.exception, ConfigError)


@pytest.mark.slow
def test_the_quickstart_command_prints_its_table_and_report_path(tmp_path: Path) -> None:
    cli = runner.invoke(app, ["quickstart", "--out", str(tmp_path), "--timesteps", "2048"], terminal_width=200)
    assert cli.exit_code == 0, cli.output
    report = tmp_path / "quickstart" / "report"
    assert f"report: {report / 'report.html'}" in cli.output
    assert (report / "report.html").is_file()
    saved = json.loads((report / "metrics.json").read_text())
    for v in saved["verdicts"]:  # one verdict line per baseline, as in metrics.json
        assert v["line"] in cli.output
    assert "total return" in cli.output
    assert "ma_crossover" in cli.output


@pytest.mark.slow
def test_the_commands_are_registered_and_fail_with_the_taxonomy(tmp_path: Path) -> None:
    for cmd in ("backtest", "walkforward", "report", "quickstart"):
        res = runner.invoke(app, [cmd, "--help"], terminal_width=200)
        assert res.exit_code == 0, res.output
    cli = runner.invoke(app, ["report", str(tmp_path)])
    assert isinstance(cli.exception, DataError)
    cli = runner.invoke(app, ["quickstart", "--timesteps", "10", "--out", str(tmp_path)])
    assert isinstance(cli.exception, ConfigError)
    assert not (tmp_path / "quickstart").exists()
    cfg = tmp_path / "wf.yaml"
    cfg.write_text(yaml.safe_dump({"name": "x", "data": {"source": "sample"}}))
    cli = runner.invoke(app, ["walkforward", str(cfg), "--folds", "0"])
    assert isinstance(cli.exception, ConfigError)


@pytest.mark.slow
def test_walkforward_command_writes_the_summary(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = {
        "name": "wf_tiny",
        "seed": 5,
        "data": {"source": "sample", "split": {"train": 0.6, "validation": 0.2, "test": 0.2}},
        "env": {"window": 12, "episode_length_bars": 256},
        "train": {"total_timesteps": 4096, "n_envs": 8, "ppo": {"n_steps": 64, "batch_size": 256, "n_epochs": 1},
                  "eval_every_steps": 0, "checkpoint_every_steps": 0, "early_stopping_patience": None},
        "tracking": {"mode": "disabled"},
    }
    path = tmp_path / "wf.yaml"
    path.write_text(yaml.safe_dump(cfg))
    stages: list[tuple[str, int, int]] = []

    class Recorder:  # stands in for the progress bars: what the command reports, in order
        def __init__(self, prog: object) -> None:
            pass

        def __call__(self, stage: str, done: int, total: int) -> None:
            stages.append((stage, done, total))

    monkeypatch.setattr(backtest_cmd, "_Bars", Recorder)
    # coinrl walkforward CONFIG key=value --folds 2 --seeds 2: the override sets the budget
    cli = runner.invoke(
        app, ["walkforward", str(path), "train.total_timesteps=1024", "--folds", "2", "--seeds", "2",
              "--out", str(tmp_path), "--no-track"], terminal_width=200,
    )
    assert cli.exit_code == 0, cli.output
    folder = tmp_path / "wf_tiny-walkforward"
    assert f"report: {folder / 'report.html'}" in cli.output
    assert "2 folds x 2 seeds" in cli.output
    assert ("train", 4, 4) in stages
    summary = json.loads((folder / "walkforward.json").read_text())
    assert summary["seeds"] == [5, 6]  # from the experiment seed
    assert summary["config"]["train"]["total_timesteps"] == 1024
    assert summary["meta"]["embargo_bars"] == 12  # at least the env window
    assert summary["n_folds"] == 2
    assert len(summary["runs"]) == 4
    assert summary["stats"]["n_trials"] == 2.0
    for v in summary["verdicts"]:
        assert v["line"] in cli.output
    assert (folder / "report.html").is_file()
    assert summary["meta"]["seeds"] == [5, 6]  # its identity, checked before the folder is replaced
    assert summary["meta"]["folds"] == 2
    with pytest.raises(ConfigError, match="folds"):
        run_walkforward(path, folds=0, seeds=1, out_dir=tmp_path)
    # the same walk-forward again replaces its own folder; another one is refused, unless --overwrite
    budget = ["train.total_timesteps=1024"]
    run_walkforward(path, folds=2, seeds=2, overrides=budget, out_dir=tmp_path, track=False)
    with pytest.raises(ConfigError, match="already holds another walk-forward"):
        run_walkforward(path, folds=2, seeds=1, overrides=budget, out_dir=tmp_path, track=False)
    with pytest.raises(ConfigError, match="config_fingerprint"):
        run_walkforward(path, folds=2, seeds=2, overrides=["train.total_timesteps=2048"], out_dir=tmp_path,
                        track=False)
    run_walkforward(path, folds=2, seeds=1, overrides=budget, out_dir=tmp_path, track=False, overwrite=True)
    assert json.loads((folder / "walkforward.json").read_text())["seeds"] == [5]


@pytest.mark.slow
def test_walkforward_refuses_a_folder_of_another_walkforward_before_training(tmp_path: Path) -> None:
    path = tmp_path / "wf.yaml"
    path.write_text(yaml.safe_dump({
        "name": "wf_other", "data": {"source": "sample"}, "env": {"window": 12},
        "train": {"total_timesteps": 2048, "n_envs": 1, "ppo": {"n_steps": 64, "batch_size": 64}},
        "tracking": {"mode": "disabled"},
    }))
    folder = tmp_path / "wf_other-walkforward"
    candles = planted_pattern(300, seed=1)
    res = simulate_trading_strategy(np.sign(candles["signal"].to_numpy()), candles, n_random=1)
    save_walk_forward(summarise([[res]], [0]), folder)  # a walk-forward of something else
    before = (folder / "walkforward.json").read_text()
    stages: list[str] = []
    with pytest.raises(ConfigError, match="already holds another walk-forward") as err:
        run_walkforward(path, folds=2, seeds=1, out_dir=tmp_path, track=False,
                        progress=lambda s, d, n: stages.append(s))
    assert "--overwrite" in str(err.value)
    assert "train" not in stages  # refused before any training
    assert (folder / "walkforward.json").read_text() == before
    # a folder that is no walk-forward at all is not replaced either
    odd = tmp_path / "odd"
    (odd / "wf_other-walkforward").mkdir(parents=True)
    (odd / "wf_other-walkforward" / "notes.txt").write_text("mine")
    cli = runner.invoke(app, ["walkforward", str(path), "--folds", "2", "--seeds", "1", "--out", str(odd),
                              "--no-track"])
    assert isinstance(cli.exception, ConfigError)
    assert "not a walk-forward results folder" in str(cli.exception)
    assert (odd / "wf_other-walkforward" / "notes.txt").read_text() == "mine"


@pytest.fixture(scope="module")
def quick_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A quickstart bundle (2,048 steps) trained once for the backtest-command tests below."""
    out = tmp_path_factory.mktemp("quick")
    run_quickstart(out, timesteps=2048)
    return out / "quickstart" / "bundle"


def _candles_4h(path: Path) -> Path:
    from coinrl.pipeline.sample import load_sample

    c = load_sample()
    t = pd.to_datetime(c["ts_ms"], unit="ms", utc=True)
    g = c.groupby(t.dt.floor("4h"))
    out = pd.DataFrame({
        "timestamp": g["ts_ms"].first(), "open": g["open"].first(), "high": g["high"].max(),
        "low": g["low"].min(), "close": g["close"].last(), "volume": g["volume"].sum(),
    }).iloc[1:-1]
    out.to_csv(path, index=False)
    return path


@pytest.mark.slow
def test_backtest_refuses_another_timeframe_unless_forced(quick_bundle: Path, tmp_path: Path) -> None:
    data = _candles_4h(tmp_path / "btc_4h.csv")
    cli = runner.invoke(app, ["backtest", str(quick_bundle), "--data", str(data), "--split", "full",
                              "--out", str(tmp_path), "--no-track"], terminal_width=200)
    assert isinstance(cli.exception, ConfigError)  # coinrl's main() prints it, exit status 2
    assert "1h" in str(cli.exception)
    assert "4h" in str(cli.exception)
    assert "--force" in str(cli.exception)
    assert not list(tmp_path.glob("quickstart-backtest-*"))
    folder, res = run_backtest(quick_bundle, data, "full", tmp_path, track=False, force=True)
    assert res.warnings[0].startswith("FORCED")
    page = (folder / "report.html").read_text()
    assert "FORCED: the bundle was trained on 1h bars" in page


@pytest.mark.slow
def test_backtest_cost_overrides_are_costs_only_and_recorded(quick_bundle: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="only execution costs"):
        run_backtest(quick_bundle, out_dir=tmp_path, track=False, cost_overrides=["env.window=5"])
    with pytest.raises(ConfigError, match="taker_fee_rate"):
        run_backtest(quick_bundle, out_dir=tmp_path, track=False, cost_overrides=["env.taker_fee_rate=-1"])
    base_folder, base = run_backtest(quick_bundle, out_dir=tmp_path, track=False)
    cli = runner.invoke(app, ["backtest", str(quick_bundle), "env.taker_fee_rate=0.004", "env.slippage_bps=20",
                              "--out", str(tmp_path), "--no-track", "--cost-sweep"], terminal_width=220)
    assert cli.exit_code == 0, cli.output
    folders = sorted(tmp_path.glob("quickstart-backtest-test-costs-*"))
    assert len(folders) == 1  # its own folder: the 1x report beside it is untouched
    assert (base_folder / "metrics.json").is_file()
    saved = json.loads((folders[0] / "metrics.json").read_text())
    assert saved["env"]["taker_fee_rate"] == 0.004
    assert saved["meta"]["cost_overrides"] == {"taker_fee_rate": 0.004, "slippage_bps": 20}
    page = (folders[0] / "report.html").read_text()
    assert "env.taker_fee_rate=0.004" in page
    sweep = saved["meta"]["cost_sweep"]
    assert [r["multiplier"] for r in sweep["rows"]] == [0.5, 1.0, 2.0, 4.0]
    assert sweep["rows"][3]["taker_fee_rate"] == pytest.approx(0.016)
    assert sweep["rows"][1]["total_return"] == pytest.approx(saved["metrics"]["total_return"])
    fees = [r["fees_paid_quote"] for r in sweep["rows"]]
    assert fees[0] < fees[-1] or saved["metrics"]["n_fills"] == 0
    assert "cost sweep" in cli.output
    assert "directional calls: accuracy" in cli.output  # the agent's calls, beside the table
    assert any(line in cli.output for line in sweep["summary"])
    assert "Cost sweep" in page
    assert base.env_config.taker_fee_rate == 0.001  # the bundle's own costs by default


@pytest.mark.slow
def test_backtest_never_replaces_another_backtests_folder(quick_bundle: Path, tmp_path: Path) -> None:
    folder, _ = run_backtest(quick_bundle, out_dir=tmp_path, track=False)
    run_backtest(quick_bundle, out_dir=tmp_path, track=False)  # the same backtest again: fine
    saved = json.loads((folder / "metrics.json").read_text())
    saved["meta"]["bundle_id"] = "another-bundle"
    (folder / "metrics.json").write_text(json.dumps(saved))
    cli = runner.invoke(app, ["backtest", str(quick_bundle), "--out", str(tmp_path), "--no-track"])
    assert isinstance(cli.exception, ConfigError)
    assert "already holds another backtest" in str(cli.exception)
    assert json.loads((folder / "metrics.json").read_text())["meta"]["bundle_id"] == "another-bundle"
    run_backtest(quick_bundle, out_dir=tmp_path, track=False, overwrite=True)
    assert json.loads((folder / "metrics.json").read_text())["meta"]["bundle_id"] != "another-bundle"
    # other data, other split: other folders
    val, _ = run_backtest(quick_bundle, split="validation", out_dir=tmp_path, track=False)
    assert val.name == "quickstart-backtest-validation"


@pytest.mark.slow
def test_evaluate_prints_the_directional_quality_beside_the_table(quick_bundle: Path, tmp_path: Path) -> None:
    out = tmp_path / "eval.json"
    cli = runner.invoke(app, ["evaluate", str(quick_bundle), "--split", "test", "--json", str(out)],
                        terminal_width=200)
    assert cli.exit_code == 0, cli.output
    assert "directional calls: accuracy" in cli.output
    for call in ("long", "short", "flat"):
        assert f"  {call}" in cli.output
    rep = json.loads(out.read_text())
    assert 0.0 <= rep["policy"]["direction/accuracy"] <= 1.0


def test_quickstart_refuses_a_folder_holding_another_run_before_training(tmp_path: Path) -> None:
    from coinrl.experiments.run_dir import claim_run_dir, run_identity
    from coinrl.pipeline.source import load_dataset

    cfg = quickstart_config(2048)
    other = {**run_identity(cfg, load_dataset(cfg.data)), "seed": 7}  # a run of another seed
    run_dir = tmp_path / "quickstart"
    claim_run_dir(run_dir, other)
    (run_dir / "progress.csv").write_text("theirs")
    with pytest.raises(ConfigError, match="--overwrite"):
        run_quickstart(tmp_path, timesteps=2048)
    assert (run_dir / "progress.csv").read_text() == "theirs"
    assert not (run_dir / "bundle").exists()


def test_quickstart_refuses_files_of_an_unrecorded_run_before_training(tmp_path: Path) -> None:
    (tmp_path / "quickstart" / "bundle").mkdir(parents=True)
    (tmp_path / "quickstart" / "bundle" / "manifest.json").write_text("{}")
    with pytest.raises(ConfigError, match="not this quickstart"):
        run_quickstart(tmp_path, timesteps=2048)
    assert (tmp_path / "quickstart" / "bundle" / "manifest.json").read_text() == "{}"
