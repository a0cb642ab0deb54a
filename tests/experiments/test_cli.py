"""The coinrl CLI: help on every level, ingest/list round trip, clear errors with exit 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from coinrl.experiments.cli import app

runner = CliRunner()


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    """Run the real console entry point (main() maps CoinrlError to exit status 2)."""
    code = "from coinrl.experiments.cli import main; main()"
    return subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=120, check=False
    )


@pytest.mark.parametrize("argv", [[], ["data"], ["emulator"]])
def test_help_on_every_level(argv: list[str]) -> None:
    res = runner.invoke(app, [*argv, "--help"])
    assert res.exit_code == 0, res.output
    assert "Usage" in res.output


def test_ingest_sample_then_list_shows_the_stored_range(tmp_path: Path) -> None:
    out = tmp_path / "data"
    res = runner.invoke(app, ["data", "ingest", "--sample", "--out", str(out)])
    assert res.exit_code == 0, res.output
    stored = list(out.glob("*.parquet"))
    assert len(stored) == 1
    res = runner.invoke(app, ["data", "list", str(out)])
    assert res.exit_code == 0, res.output
    assert "BTC/USD" in res.output
    assert "1h" in res.output


def test_ingest_real_csvs_reports_rows_and_fixes(tmp_path: Path, shared_data: Path) -> None:
    res = runner.invoke(
        app,
        ["data", "ingest", str(shared_data / "btc_usd_1h_coinbase.csv"), "--out", str(tmp_path)],
        terminal_width=200,
    )
    assert res.exit_code == 0, res.output
    assert "reversed" in res.output
    assert len(list(tmp_path.glob("*.parquet"))) == 1


@pytest.mark.slow
def test_unknown_file_is_a_one_line_error_with_exit_2(tmp_path: Path) -> None:
    bad = tmp_path / "notes.csv"
    bad.write_text("hello,world\n1,2\n")
    res = _run("data", "ingest", str(bad), "--out", str(tmp_path / "o"))
    assert res.returncode == 2, res.stdout + res.stderr
    assert "error:" in res.stderr
    assert "Traceback" not in res.stderr
    assert not (tmp_path / "o").exists() or not list((tmp_path / "o").glob("*.parquet"))


@pytest.mark.slow
def test_bad_option_value_names_the_field(tmp_path: Path) -> None:
    res = _run("data", "ingest", "--sample", "--duplicates", "keep", "--out", str(tmp_path))
    assert res.returncode == 2
    assert "duplicates" in res.stderr


@pytest.mark.slow
def test_list_of_missing_folder_says_what_to_pass(tmp_path: Path) -> None:
    res = _run("data", "list", str(tmp_path / "missing"))
    assert res.returncode == 2
    assert "not a folder" in res.stderr


@pytest.mark.slow
def test_fetch_then_update_against_the_emulator(tmp_path: Path, emulator: object) -> None:
    url = emulator.base_url  # type: ignore[attr-defined]
    dest = tmp_path / "btc.parquet"
    res = runner.invoke(
        app,
        ["data", "fetch", "BTC/USDT", "--since", "2024-01-01", "--exchange-url", url, "--out", str(dest)],
        terminal_width=300,
    )
    assert res.exit_code == 0, res.output
    assert "2,999 closed candles" in res.output  # the in-progress last bar is not stored
    res = runner.invoke(app, ["data", "update", str(dest), "--exchange-url", url], terminal_width=300)
    assert res.exit_code == 0, res.output
    assert "0 new candle(s)" in res.output


@pytest.mark.slow
def test_fetch_of_an_unlisted_symbol_fails_clearly(tmp_path: Path, emulator: object) -> None:
    url = emulator.base_url  # type: ignore[attr-defined]
    res = _run("data", "fetch", "NOPE/USDT", "--exchange-url", url, "--out", str(tmp_path / "x.parquet"))
    assert res.returncode == 2
    assert "does not list symbol 'NOPE/USDT'" in res.stderr
    assert not (tmp_path / "x.parquet").exists()


@pytest.mark.slow
def test_features_command_writes_a_causal_feature_file(tmp_path: Path) -> None:
    out = tmp_path / "d"
    assert runner.invoke(app, ["data", "ingest", "--sample", "--out", str(out)]).exit_code == 0
    src = next(out.glob("*.parquet"))
    res = runner.invoke(app, ["data", "features", str(src), "--out", str(tmp_path / "f.parquet")])
    assert res.exit_code == 0, res.output
    import pandas as pd

    feats = pd.read_parquet(tmp_path / "f.parquet")
    assert "rsi_14" in feats.columns
    assert feats.drop(columns=["ts_ms"]).notna().all().all()


@pytest.mark.slow
def test_version_prints_the_installed_version() -> None:
    from importlib.metadata import version

    res = _run("--version")
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == f"coinrl {version('coinrl')}"


@pytest.mark.parametrize("flag", ["-q", "-v", "-vv", "--quiet"])
@pytest.mark.slow
def test_verbosity_flags_are_accepted_after_the_subcommand(tmp_path: Path, flag: str) -> None:
    out = tmp_path / "d"
    res = _run("data", "ingest", "--sample", "--out", str(out), flag)
    assert res.returncode == 0, res.stderr
    assert len(list(out.glob("*.parquet"))) == 1
    if flag in ("-q", "--quiet"):
        assert "INFO" not in res.stderr
    else:
        assert "DEBUG" in res.stderr or "INFO" in res.stderr


def test_verbosity_flags_after_a_double_dash_stay_where_they_are() -> None:
    from coinrl.experiments.cli import hoist_verbosity_flags

    assert hoist_verbosity_flags(["train", "c.yaml", "-v", "--", "-q"]) == ["-v", "train", "c.yaml", "--", "-q"]


def _generic_csv(path: Path, start: str, n: int, shift: float = 0.0) -> Path:
    import numpy as np
    import pandas as pd

    ts = pd.date_range(start, periods=n, freq="h", tz="UTC")
    close = 100 + np.sin(ts.asi8 // 3_600_000_000_000 % 1000) + shift  # a function of the bar time
    pd.DataFrame({
        "timestamp": ts.strftime("%Y-%m-%d %H:%M:%S"), "open": close, "high": close + 1,
        "low": close - 1, "close": close, "volume": 1.0,
    }).to_csv(path, index=False)
    return path


@pytest.mark.slow
def test_ingest_never_replaces_a_stored_series_with_another(tmp_path: Path) -> None:
    import pandas as pd

    out = tmp_path / "data"
    a = _generic_csv(tmp_path / "a.csv", "2024-01-01", 3000)
    b = _generic_csv(tmp_path / "b.csv", "2024-06-01", 200, shift=7.0)
    assert _run("data", "ingest", str(a), "--out", str(out)).returncode == 0
    stored = out / "unknown_UNKNOWN_1h.parquet"
    assert len(pd.read_parquet(stored)) == 3000
    res = _run("data", "ingest", str(b), "--out", str(out))  # no symbol: may be another market
    assert res.returncode == 2, res.stdout
    assert "--symbol" in res.stderr
    assert len(pd.read_parquet(stored)) == 3000  # not replaced by 200 rows
    res = _run("data", "ingest", str(b), "--symbol", "ETH/USD", "--exchange", "kraken", "--out", str(out))
    assert res.returncode == 0, res.stderr
    assert len(pd.read_parquet(out / "kraken_ETH-USD_1h.parquet")) == 200


@pytest.mark.slow
def test_ingest_merges_the_same_market_only_when_shared_bars_agree(tmp_path: Path) -> None:
    import pandas as pd

    out = tmp_path / "data"
    opts = ["--symbol", "BTC/USD", "--exchange", "kraken", "--out", str(out)]
    first = _generic_csv(tmp_path / "jan.csv", "2024-01-01", 100)
    later = _generic_csv(tmp_path / "later.csv", "2024-01-03 04:00", 100)  # 48 bars shared
    assert _run("data", "ingest", str(first), *opts).returncode == 0
    res = _run("data", "ingest", str(later), *opts)
    assert res.returncode == 0, res.stderr
    stored = out / "kraken_BTC-USD_1h.parquet"
    assert len(pd.read_parquet(stored)) == 152
    revised = _generic_csv(tmp_path / "revised.csv", "2024-01-02", 10, shift=0.5)
    res = _run("data", "ingest", str(revised), *opts)
    assert res.returncode == 2
    assert "differ" in res.stderr
    assert len(pd.read_parquet(stored)) == 152
