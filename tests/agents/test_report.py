"""Report folders: the files, the figures, the page rendered in headless Chromium, W&B."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib import image as mpimg

from coinrl.agents.backtest import BacktestResult, simulate_trading_strategy
from coinrl.agents.config import TrackingConfig
from coinrl.agents.metrics import simple_returns, trade_returns
from coinrl.agents.plots import (
    AGENT_COLOR,
    marker_offsets,
    marker_style,
    plot_backtest_results,
    rolling_sharpe,
    thin_index,
)
from coinrl.agents.report import (
    REPORT_FILES,
    load_backtest_results,
    render_report,
    save_backtest_results,
)
from coinrl.agents.tearsheet import (
    TRADE_COLUMNS,
    benchmark_stats,
    monthly_returns,
    round_trips,
    tail_risk,
    trade_summary,
    worst_drawdowns,
)
from coinrl.agents.walkforward import save_walk_forward, summarise
from coinrl.pipeline.dataset import MarketData
from coinrl.pipeline.errors import DataError

HOUR_MS = 3_600_000
ARTIFACTS = Path(os.environ.get("COINRL_TEST_ARTIFACTS", Path(__file__).resolve().parents[2] / "test-artifacts"))
"""Where the rendered report screenshots are kept for a person to look at (gitignored)."""
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def _market(n: int = 1500, seed: int = 0) -> MarketData:
    rng = np.random.default_rng(seed)
    close = 30_000.0 * np.exp(np.cumsum(rng.normal(0.0002, 0.008, n)))
    open_ = np.r_[30_000.0, close[:-1]]
    return MarketData(
        ts_ms=1_704_067_200_000 + np.arange(n, dtype=np.int64) * HOUR_MS,
        open=open_, high=np.maximum(open_, close) * 1.002, low=np.minimum(open_, close) * 0.998,
        close=close, volume=np.full(n, 20.0), features=np.zeros((n, 1), dtype=np.float32),
        feature_names=("none",), symbol="BTC/USD", timeframe="1h", meta={"split": "test"},
    )


def _crossover(md: MarketData, fast: int = 12, slow: int = 48) -> np.ndarray:
    c = pd.Series(md.close)
    return (c.rolling(fast).mean() > c.rolling(slow).mean()).to_numpy().astype(float)


@pytest.fixture(scope="module")
def result() -> BacktestResult:
    md = _market()
    return simulate_trading_strategy(_crossover(md), md, name="crossover", n_random=2)


@pytest.mark.slow
def test_the_folder_holds_every_file_and_the_tables_round_trip(result: BacktestResult, tmp_path: Path) -> None:
    folder = save_backtest_results(result, tmp_path / "report")
    assert sorted(p.name for p in folder.iterdir()) == sorted(REPORT_FILES)
    saved = load_backtest_results(folder)
    pd.testing.assert_frame_equal(saved.fills, result.fills.reset_index(drop=True))
    eq = saved.equity
    assert len(eq) == len(result.equity_quote)
    np.testing.assert_array_equal(eq["equity_quote"], result.equity_quote)
    np.testing.assert_array_equal(eq["baseline_buy_and_hold_equity_quote"],
                                  result.baselines["buy_and_hold"].equity_quote)
    summary = json.loads((folder / "metrics.json").read_text())  # strict JSON: no NaN
    assert summary["metrics"]["sharpe"] == pytest.approx(result.metrics["sharpe"])
    assert [v["line"] for v in summary["verdicts"]] == result.verdict_lines()
    assert summary["meta"]["market_fingerprint"] == result.meta["market_fingerprint"]
    assert "numpy" in summary["versions"]["libraries"]
    page = (folder / "report.html").read_text()
    # self-contained: plotly.js inline, nothing fetched from the network
    assert "<script src=" not in page
    assert "<link" not in page
    assert len(page) > 1_000_000  # plotly.js itself
    for text in ("Verdict", result.verdict_lines()[0].split(":")[0], "Sharpe ratio (annualised)",
                 "taker_fee_rate", result.meta["market_fingerprint"]):
        assert text in page
    # saving again replaces the folder
    again = save_backtest_results(result, folder)
    assert sorted(p.name for p in again.iterdir()) == sorted(REPORT_FILES)


@pytest.mark.slow
def test_the_pngs_are_drawn_and_sized(result: BacktestResult, tmp_path: Path) -> None:
    fig, pfig = plot_backtest_results(result, tmp_path)
    assert len(fig.axes) == 5
    assert len(pfig.data) >= 8  # price, buys, sells, exposure, strategy, 4 baselines, drawdown...
    img = mpimg.imread(tmp_path / "backtest.png")
    assert img.shape[:2] == (1100, 1200)
    assert img[..., :3].std() > 0.05  # not a blank canvas
    assert (tmp_path / "backtest.html").stat().st_size > 1_000_000
    folder = save_backtest_results(result, tmp_path / "r")
    assert mpimg.imread(folder / "backtest.png").shape[:2] == (1100, 1200)


def test_rolling_sharpe_and_thinning() -> None:
    eq = 100 * np.cumprod(np.r_[1.0, np.tile([1.01, 0.995], 50)])
    rs, w = rolling_sharpe(eq, 8760.0, window_bars=10)
    assert w == 10
    assert np.isnan(rs[:10]).all()
    r = eq[1:] / eq[:-1] - 1
    assert rs[10] == pytest.approx(r[:10].mean() / r[:10].std(ddof=1) * np.sqrt(8760.0))
    idx = thin_index(100_000, 500)
    assert len(idx) <= 500
    assert idx[0] == 0
    assert idx[-1] == 99_999


@pytest.mark.slow
def test_render_report_redraws_from_the_tables_alone(result: BacktestResult, tmp_path: Path) -> None:
    folder = save_backtest_results(result, tmp_path / "report")
    (folder / "report.html").unlink()
    (folder / "backtest.png").unlink()
    page = render_report(folder)
    assert page == folder / "report.html"
    assert result.verdict_lines()[0] in page.read_text()
    assert (folder / "backtest.png").stat().st_size > 10_000
    with pytest.raises(DataError, match="not a backtest report folder"):
        render_report(tmp_path)


@pytest.mark.slow
def test_the_report_is_logged_to_an_offline_wandb_run(
    result: BacktestResult, tmp_path: Path, offline_wandb: Path
) -> None:
    folder = save_backtest_results(result, tmp_path / "report", tracking=TrackingConfig(mode="offline"))
    files = [p for p in (tmp_path / "wandb").rglob("*") if p.is_file()]
    assert any(p.suffix == ".wandb" for p in files)
    names = {p.name for p in files}
    assert any("chart" in n and n.endswith(".png") for n in names)
    assert any(n.endswith(".html") for n in names)
    assert not (folder / "wandb").exists()  # the report folder stays self-contained


# --------------------------------------------------------------------------- headless Chromium


def _chromium() -> str:
    for name in CHROMIUM_NAMES:
        path = shutil.which(name)
        if path:
            return path
    if os.environ.get("CI") == "true":
        pytest.fail("chromium is required in CI to render the report (apt-get install -y chromium)")
    pytest.skip("chromium is not installed (apt-get install -y chromium): cannot render the report")


def _screenshot(page: Path, out: Path, profile: Path, height: int = 2600) -> tuple[np.ndarray, list[str]]:
    """Open ``page`` in headless Chromium; return the screenshot (RGBA floats) and the
    console messages it logged."""
    args = [
        _chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run",
        f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0", "--hide-scrollbars",
        "--virtual-time-budget=10000", f"--window-size=1300,{height}", f"--screenshot={out}",
        page.resolve().as_uri(),
    ]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=180, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert out.is_file(), proc.stderr[-2000:]
    console = [line for line in proc.stderr.splitlines() if ":CONSOLE" in line]
    return mpimg.imread(out), console


def _color_pixels(img: np.ndarray, hex_color: str, tol: float = 0.03) -> int:
    rgb = np.array([int(hex_color[i : i + 2], 16) for i in (1, 3, 5)]) / 255.0
    return int((np.abs(img[..., :3] - rgb).max(axis=-1) < tol).sum())


@pytest.mark.slow
def test_the_report_renders_in_headless_chromium_with_its_equity_chart(
    result: BacktestResult, tmp_path: Path
) -> None:
    folder = save_backtest_results(result, tmp_path / "report")
    img, console = _screenshot(folder / "report.html", tmp_path / "shot.png", tmp_path / "profile")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shutil.copy(tmp_path / "shot.png", ARTIFACTS / "report_top.png")
    assert console == []  # no errors, no messages at all
    assert img.shape[:2] == (2600, 1300)
    ink = (img[..., :3] < 0.9).any(axis=-1).mean()
    assert ink > 0.02, "the page is blank"
    # the strategy's equity line (its colour is used nowhere else) was drawn by plotly.js
    assert _color_pixels(img, AGENT_COLOR) > 300
    # control: the same check catches a page whose script fails
    bad = tmp_path / "bad.html"
    bad.write_text("<html><body><p>x</p><script>undefinedFunction();</script></body></html>")
    _, bad_console = _screenshot(bad, tmp_path / "bad.png", tmp_path / "profile2")
    assert any("undefinedFunction" in line for line in bad_console)


@pytest.mark.slow
def test_the_walk_forward_report_renders_in_headless_chromium(tmp_path: Path) -> None:
    # fold x seed results from rule strategies (no training): 2 folds x 2 "seeds"
    results = []
    for fold in range(2):
        md = _market(800, seed=10 + fold)
        results.append([
            simulate_trading_strategy(_crossover(md, f, 4 * f), md, n_random=1) for f in (6, 12)
        ])
    wf = summarise(results, [0, 1])
    folder = save_walk_forward(wf, tmp_path / "wf")
    img, console = _screenshot(folder / "report.html", tmp_path / "shot.png", tmp_path / "profile")
    assert console == []
    assert (img[..., :3] < 0.9).any(axis=-1).mean() > 0.02
    assert _color_pixels(img, AGENT_COLOR) > 300


# --------------------------------------------------------------------------- the tear sheet


@pytest.fixture(scope="module")
def busy() -> BacktestResult:
    """A strategy that trades a lot (400+ fills, long and short) over 4,000 hourly bars."""
    md = _market(4000, seed=3)
    sig = np.where(np.sin(np.arange(4000) / 6.0) > 0, 1.0, -1.0)
    return simulate_trading_strategy(sig, md, name="busy", n_random=3)


@pytest.mark.slow
def test_round_trips_are_the_metrics_trades_with_prices_fees_and_durations(busy: BacktestResult) -> None:
    eq, fills = busy.equity_frame(), busy.fills
    trades = round_trips(eq, fills)
    np.testing.assert_allclose(trades["return"], trade_returns(eq["equity_quote"], eq["exposure"]), rtol=1e-12)
    assert len(trades) == busy.metrics["n_trades"]
    assert set(trades["side"]) == {"long", "short"}
    first = trades.iloc[0]
    entry_fill = fills[fills["ts_ms"] == first["entry_ts_ms"]].iloc[0]
    assert first["entry_price_quote"] == entry_fill["price_quote"]
    assert first["duration_hours"] == (first["exit_ts_ms"] - first["entry_ts_ms"]) / HOUR_MS
    assert trades["fees_quote"].sum() == pytest.approx(fills["fee_quote"].sum(), rel=1e-9)
    # the PnL of all trades plus the flat periods is the whole run's
    assert trades["pnl_quote"].sum() == pytest.approx(eq["equity_quote"].iloc[-1] - eq["equity_quote"].iloc[0], rel=1e-9)
    s = trade_summary(trades)
    assert s["win_rate"] == pytest.approx(busy.metrics["win_rate"])
    assert s["long_n"] + s["short_n"] == s["n_trades"]
    assert s["best_return"] == trades["return"].max()
    assert s["avg_loss_quote"] < 0 < s["avg_win_quote"]


@pytest.mark.slow
def test_quantstats_agrees_with_the_empyrical_checked_metrics(busy: BacktestResult) -> None:
    qs = pytest.importorskip("quantstats")
    r = pd.Series(busy.returns, index=pd.to_datetime(busy.ts_ms[1:], unit="ms"))
    m, ppy = busy.metrics, 8760.0
    assert float(qs.stats.sharpe(r, periods=ppy, annualize=True)) == pytest.approx(m["sharpe"], rel=1e-9)
    assert float(qs.stats.volatility(r, periods=ppy, annualize=True)) == pytest.approx(m["annualised_volatility"], rel=1e-9)
    assert -float(qs.stats.max_drawdown(r)) == pytest.approx(m["max_drawdown"], rel=1e-9)
    assert float(qs.stats.comp(r)) == pytest.approx(m["total_return"], rel=1e-9)
    assert float(qs.stats.sortino(r, periods=ppy, annualize=True)) == pytest.approx(m["sortino"], rel=1e-9)
    # the tear sheet's calendar returns compound to the total return
    monthly = monthly_returns(busy.equity_frame())
    assert float(np.prod(1.0 + monthly["EOY"])) - 1.0 == pytest.approx(m["total_return"], rel=1e-9)
    dd = worst_drawdowns(busy.equity_frame())
    assert dd["max_drawdown"].iloc[0] == pytest.approx(m["max_drawdown"], rel=1e-6)
    assert len(dd) == 5
    tail = tail_risk(busy.equity_frame())
    assert tail["cvar_bar"] <= tail["var_bar"] < 0
    bench = benchmark_stats(busy.equity_frame(), ppy)
    b = pd.Series(simple_returns(busy.baselines["buy_and_hold"].equity_quote), index=r.index)
    beta = np.cov(r, b)[0, 1] / np.var(b, ddof=1)
    assert bench["beta"] == pytest.approx(beta, rel=1e-6)


@pytest.mark.slow
def test_the_tear_sheet_lists_trades_all_fills_calendar_drawdowns_tail_and_benchmark(
    busy: BacktestResult, tmp_path: Path
) -> None:
    assert len(busy.fills) > 400
    folder = save_backtest_results(busy, tmp_path / "report")
    page = (folder / "report.html").read_text()
    for text in ("Round trips", 'href="trades.csv"', 'href="fills.csv"', "Monthly and yearly returns",
                 "Worst drawdowns", "Value at risk (95%)", "Conditional VaR", "Alpha (annualised,",
                 "Beta", "Information ratio", "Average holding time", "Payoff ratio",
                 "MEAN over 3 draws", "Randomised baseline: total return over its draws"):
        assert text in page, text
    fills_csv = pd.read_csv(folder / "fills.csv")
    assert len(fills_csv) == len(busy.fills)  # every fill, not the first 200
    trades_csv = pd.read_csv(folder / "trades.csv")
    assert len(trades_csv) == busy.metrics["n_trades"]
    assert list(trades_csv.columns) == list(TRADE_COLUMNS)


def test_trade_markers_shrink_fade_and_leave_the_price_line_as_fills_grow(busy: BacktestResult) -> None:
    assert marker_style(10) == (10.0, 1.0)
    size200, op200 = marker_style(200)
    size2000, op2000 = marker_style(2000)
    assert 5.0 <= size2000 < size200 < 10.0
    assert op2000 < op200 < 1.0
    fills = busy.fills
    close = busy.equity_frame()["close_quote"]
    y = marker_offsets(fills, close)
    buys = (fills["side"] == "buy").to_numpy()
    assert (y[buys] < fills["price_quote"].to_numpy()[buys]).all()  # buys below the price line
    assert (y[~buys] > fills["price_quote"].to_numpy()[~buys]).all()  # sells above it


@pytest.mark.slow
def test_a_short_backtest_shows_no_annualised_growth_and_says_so(tmp_path: Path) -> None:
    md = _market(40, seed=1)
    res = simulate_trading_strategy(np.ones(40), md, n_random=2)
    assert np.isnan(res.metrics["annualised_return"])
    assert np.isnan(res.metrics["calmar"])
    assert res.metrics["short_sample"] == 1.0
    assert any(w.startswith("SMALL SAMPLE") for w in res.warnings)
    assert all("SMALL SAMPLE" in line for line in res.verdict_lines())
    page = (save_backtest_results(res, tmp_path / "r") / "report.html").read_text()
    assert "n/a (short sample)" in page
    long = simulate_trading_strategy(np.ones(3000), _market(3000), n_random=1)
    assert np.isfinite(long.metrics["annualised_return"])
    assert long.metrics["short_sample"] == 0.0


@pytest.mark.slow
def test_the_tear_sheet_renders_in_headless_chromium(busy: BacktestResult, tmp_path: Path) -> None:
    folder = save_backtest_results(busy, tmp_path / "report")
    img, console = _screenshot(folder / "report.html", tmp_path / "full.png", tmp_path / "profile", height=9000)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shutil.copy(tmp_path / "full.png", ARTIFACTS / "report_tearsheet.png")
    assert console == []
    assert _color_pixels(img, AGENT_COLOR) > 300
    # the return histogram (second plotly figure) and the coloured heatmap cells were drawn
    lower = img[3000:]
    assert (lower[..., :3] < 0.9).any(axis=-1).mean() > 0.02


@pytest.mark.slow
def test_walk_forward_annualises_the_aggregate_and_flags_short_folds(tmp_path: Path) -> None:
    # 3 folds of 300 hourly bars (12.5 days each): too short to annualise one by one
    results = []
    for fold in range(3):
        md = _market(300, seed=20 + fold)
        results.append([simulate_trading_strategy(_crossover(md, f, 4 * f), md, n_random=2) for f in (6, 12)])
    wf = summarise(results, [0, 1])
    assert all(np.isnan(r.metrics["annualised_return"]) for row in results for r in row)
    ann = wf.summary["agent"]["annualised_return"]
    assert ann["aggregate"] == 1.0
    assert np.isnan(ann["mean"])  # 900 bars < a quarter of a year: no annualised figure at all
    assert "median" in wf.summary["agent"]["total_return"]
    assert any(w.startswith("SMALL SAMPLE") for w in wf.warnings)
    assert all("SMALL SAMPLE" in line for line in wf.verdict_lines())
    assert all("out of sample (walk-forward test folds)" in line for line in wf.verdict_lines())
    page = (save_walk_forward(wf, tmp_path / "wf") / "report.html").read_text()
    assert "n/a (short sample)" in page
    # long enough folds: the aggregate is the fold means compounded, annualised over all bars
    results = []
    for fold in range(2):
        md = _market(1500, seed=30 + fold)
        results.append([simulate_trading_strategy(_crossover(md), md, n_random=1)])
    wf = summarise(results, [0])
    totals = [row[0].metrics["total_return"] for row in results]
    bars = sum(row[0].rollout.n_steps for row in results)
    expected = float(np.prod(1.0 + np.array(totals)) ** (8760.0 / bars) - 1.0)
    assert wf.summary["agent"]["annualised_return"]["mean"] == pytest.approx(expected, rel=1e-12)


def test_only_the_last_drawdown_of_intraday_bars_is_reported_open() -> None:
    eq = 100.0 * np.cumprod([1.0, 0.99, 1.02, 0.99, 1.02, 0.97, 1.05, 0.98, 1.0, 1.0])
    frame = pd.DataFrame({"ts_ms": 1_704_067_200_000 + np.arange(10) * 3_600_000, "equity_quote": eq})
    dd = worst_drawdowns(frame)  # four drawdowns within one UTC day; only the last is still open
    assert len(dd) == 4
    assert dd["recovered"].tolist().count(False) == 1
    assert dd.loc[~dd["recovered"], "max_drawdown"].iloc[0] == pytest.approx(0.02, rel=1e-9)


def test_a_drawdown_from_the_first_bar_that_never_recovers_is_listed() -> None:
    eq = 100.0 * np.cumprod([1.0, 0.99, 0.995, 0.98, 0.985, 0.97])
    frame = pd.DataFrame({"ts_ms": 1_704_067_200_000 + np.arange(6) * 300_000, "equity_quote": eq})
    dd = worst_drawdowns(frame)
    assert len(dd) == 1
    assert dd["max_drawdown"].iloc[0] == pytest.approx(1.0 - eq[-1] / 100.0, rel=1e-9)
    assert not dd["recovered"].iloc[0]
