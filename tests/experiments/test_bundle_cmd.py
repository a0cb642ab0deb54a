"""The commands that load bundles never run one: a crafted bundle is refused with one line by
``coinrl backtest``, ``paper`` and ``live`` and its payload never runs; ``--trusted-keys`` refuses
unsigned and untrusted bundles; ``coinrl bundle`` keygen/sign/verify/migrate, and the README's
trust-model commands, run as shown."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "live"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "agents"))
from bundle_helpers import crafted_bundle, old_format_bundle, rehash  # noqa: E402
from live_helpers import KEY, SECRET, candles, emulator, tiny_bundle  # noqa: E402

from coinrl.agents.bundle import load_model  # noqa: E402
from coinrl.agents.bundle_admin import sign_bundle  # noqa: E402
from coinrl.agents.signing import generate_keypair  # noqa: E402
from coinrl.experiments.cli import app  # noqa: E402
from coinrl.live.emulator import ReplayClock  # noqa: E402
from coinrl.live.runner import ExitCode  # noqa: E402

K0 = 160
FRAME = candles(K0 + 40, seed=9)
HOUR = 3_600_000
README = Path(__file__).resolve().parents[2] / "README.md"


@pytest.fixture(scope="module")
def good(request: pytest.FixtureRequest) -> Path:
    cache = Path(request.config.cache.mkdir("coinrl-live-tiny-bundle"))
    return tiny_bundle(cache / "bundle")


@pytest.fixture
def crafted(good: Path, tmp_path: Path) -> tuple[Path, Path]:
    marker = tmp_path / "MARKER"
    return crafted_bundle(load_model(good), tmp_path / "crafted", marker), marker


def _main(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """The real console entry point (main() maps CoinrlError to one line and exit status 2)."""
    code = "from coinrl.experiments.cli import main; main()"
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                          timeout=300, check=False, cwd=cwd)


def _invoke(args: list[str]) -> object:
    return CliRunner().invoke(app, args, catch_exceptions=False)


@pytest.mark.slow
def test_backtest_refuses_a_crafted_bundle_and_never_runs_it(
    crafted: tuple[Path, Path], tmp_path: Path
) -> None:
    bundle, marker = crafted
    res = _main("backtest", str(bundle), "--out", str(tmp_path / "runs"), "--no-track")
    assert res.returncode == 2, res.stdout + res.stderr
    assert "pickled Python objects" in res.stderr
    assert "Traceback" not in res.stderr
    assert not marker.exists()
    assert not (tmp_path / "runs").exists()


@pytest.mark.slow
def test_paper_and_live_refuse_a_crafted_bundle_and_never_run_it(
    crafted: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bundle, marker = crafted
    monkeypatch.setenv("COINRL_BINANCE_API_KEY", KEY)
    monkeypatch.setenv("COINRL_BINANCE_API_SECRET", SECRET)
    with emulator(FRAME, K0) as (server, _):
        paper = _invoke(["paper", str(bundle), "--exchange-url", server.base_url, "--journal",
                         str(tmp_path / "p.sqlite"), "--max-bars", "2", "--no-clock-check"])
        live = _invoke(["live", str(bundle), "--live", "--yes", "--exchange-url", server.base_url,
                        "--journal", str(tmp_path / "l.sqlite"), "--max-bars", "2",
                        "--no-clock-check"])
        orders = server.orders()
    for res in (paper, live):
        assert res.exit_code == ExitCode.CONFIG, res.output  # type: ignore[attr-defined]
        assert "pickled Python objects" in res.output  # type: ignore[attr-defined]
    assert orders == []
    assert not marker.exists()


@pytest.mark.slow
def test_trusted_keys_refuse_unsigned_and_untrusted_bundles_and_accept_a_signed_one(
    good: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, mine = generate_keypair(tmp_path / "me.key")
    other_key, _ = generate_keypair(tmp_path / "other.key")
    unsigned = shutil.copytree(good, tmp_path / "unsigned")
    theirs = shutil.copytree(good, tmp_path / "theirs")
    sign_bundle(theirs, other_key)
    signed = shutil.copytree(good, tmp_path / "signed")
    sign_bundle(signed, tmp_path / "me.key")
    monkeypatch.setenv("COINRL_BINANCE_API_KEY", KEY)
    monkeypatch.setenv("COINRL_BINANCE_API_SECRET", SECRET)
    clock = ReplayClock.bars(int(FRAME.ts_ms.iloc[K0]) + 1, HOUR, 250.0)
    with emulator(FRAME, K0, clock=clock) as (server, _):
        url = server.base_url

        def paper(bundle: Path, name: str) -> object:
            return _invoke(["paper", str(bundle), "--trusted-keys", str(mine), "--exchange-url", url,
                            "--journal", str(tmp_path / f"{name}.sqlite"), "--max-bars", "1",
                            "--no-clock-check", "--reload-every-bars", "0"])

        results = {name: paper(b, name) for name, b in
                   [("unsigned", unsigned), ("theirs", theirs), ("signed", signed)]}
        live = _invoke(["live", str(unsigned), "--live", "--yes", "--trusted-keys", str(mine),
                        "--exchange-url", url, "--journal", str(tmp_path / "live.sqlite"),
                        "--no-clock-check"])
        orders = server.orders()
    assert results["unsigned"].exit_code == ExitCode.CONFIG  # type: ignore[attr-defined]
    assert "is not signed" in results["unsigned"].output  # type: ignore[attr-defined]
    assert results["theirs"].exit_code == ExitCode.CONFIG  # type: ignore[attr-defined]
    assert "not one of the 1 trusted keys" in results["theirs"].output  # type: ignore[attr-defined]
    assert results["signed"].exit_code == ExitCode.OK, results["signed"].output  # type: ignore[attr-defined]
    assert live.exit_code == ExitCode.CONFIG  # type: ignore[attr-defined]
    assert "is not signed" in live.output  # type: ignore[attr-defined]
    assert orders == []


@pytest.mark.slow
def test_verify_fails_a_tampered_signed_bundle_with_one_line(good: Path, tmp_path: Path) -> None:
    assert _invoke(["bundle", "keygen", str(tmp_path / "me.key")]).exit_code == 0  # type: ignore[attr-defined]
    bundle = shutil.copytree(good, tmp_path / "b")
    assert _invoke(["bundle", "sign", str(bundle), "--key", str(tmp_path / "me.key")]).exit_code == 0  # type: ignore[attr-defined]
    (bundle / "data.json").write_text('{"symbol": "ETH/USDT"}')
    rehash(bundle)
    for extra in (["--trusted-keys", str(tmp_path / "me.key.pub")], []):  # without: its own key
        res = _main("bundle", "verify", str(bundle), *extra)
        assert res.returncode == 2, res.stdout + res.stderr
        assert "modified after" in res.stderr
        assert len(res.stderr.strip().splitlines()) == 1, res.stderr


@pytest.mark.slow
def test_readme_trust_model_commands_run_as_shown(
    good: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    text = README.read_text(encoding="utf-8")
    section = text.split("## Trust model", 1)[1]
    block = re.search(r"```bash\n(.*?)```", section, re.S)
    assert block is not None
    lines = [ln.split("#", 1)[0].strip() for ln in block.group(1).splitlines()]
    commands = [shlex.split(ln) for ln in lines if ln]
    assert [c[:3] for c in commands] == [
        ["coinrl", "bundle", "keygen"], ["coinrl", "bundle", "sign"],
        ["coinrl", "bundle", "verify"], ["coinrl", "bundle", "migrate"],
    ]
    monkeypatch.chdir(tmp_path)
    shutil.copytree(good, tmp_path / "runs" / "quickstart" / "bundle")
    old_format_bundle(load_model(good), tmp_path / "old-bundle")
    for argv in commands:
        res = CliRunner().invoke(app, argv[1:], catch_exceptions=False)
        assert res.exit_code == 0, (argv, res.output)
    trusted = tmp_path / "keys" / "alice.key.pub"
    assert load_model(tmp_path / "runs" / "quickstart" / "bundle", trusted_keys=trusted).algo == "ppo"
    assert load_model(tmp_path / "old-bundle").algo == "ppo"


@pytest.mark.slow
def test_hot_reloads_are_checked_against_the_same_trusted_keys(good: Path, tmp_path: Path) -> None:
    from coinrl.experiments.live_cmd import run_paper
    from coinrl.pipeline.errors import DataError

    key, mine = generate_keypair(tmp_path / "me.key")
    signed = shutil.copytree(good, tmp_path / "signed")
    sign_bundle(signed, key)
    unsigned = shutil.copytree(good, tmp_path / "unsigned")
    seen: list[object] = []
    clock = ReplayClock.bars(int(FRAME.ts_ms.iloc[K0]) + 1, HOUR, 250.0)
    with emulator(FRAME, K0, clock=clock) as (server, _):
        code = run_paper(signed, exchange_url=server.base_url, journal_path=tmp_path / "j.sqlite",
                         max_bars=1, max_clock_skew_ms=None, reload_every_bars=0,
                         trusted_keys=mine, install_signals=False, on_start=seen.append)
    assert code == ExitCode.OK
    reload = seen[0].loader  # type: ignore[attr-defined]
    with pytest.raises(DataError, match="is not signed"):
        reload(unsigned)
    assert reload(signed).algo == "ppo"


@pytest.mark.slow  # two training runs through the console entry point (~90 s on 2 cores)
def test_train_resume_refuses_a_crafted_checkpoint_and_never_runs_it(tmp_path: Path) -> None:
    from bundle_helpers import plant_payload

    from coinrl.agents.train import latest_checkpoint

    config = str(Path(__file__).resolve().parents[2] / "experiments" / "configs" / "ppo_btc_1h.yaml")
    micro = ["train.n_envs=4", "train.ppo.n_steps=64", "train.ppo.batch_size=128",
             "train.ppo.n_epochs=1", "train.eval_every_steps=0", "train.checkpoint_every_steps=256",
             "train.progress_bar=false", "tracking.mode=disabled"]
    out = tmp_path / "runs"
    first = _main("train", config, *micro, "train.total_timesteps=256", "--out", str(out))
    assert first.returncode == 0, first.stdout + first.stderr
    ckpt = latest_checkpoint(out / "ppo_btc_1h")
    assert ckpt is not None
    marker = tmp_path / "MARKER"
    plant_payload(ckpt / "model.zip", marker, field="clip_range")
    res = _main("train", config, *micro, "train.total_timesteps=512", "--out", str(out), "--resume")
    assert res.returncode == 2, res.stdout + res.stderr
    assert "never unpickles a run folder" in res.stderr
    assert "Traceback" not in res.stderr
    assert not marker.exists()


@pytest.mark.parametrize("damage", ["truncated_zip", "garbage_model_zip_rehashed"])
@pytest.mark.slow
def test_a_damaged_bundle_is_one_clear_line_and_exit_2(good: Path, tmp_path: Path, damage: str) -> None:
    from coinrl.agents.bundle import save_model

    if damage == "truncated_zip":
        target = save_model(load_model(good), tmp_path / "b.zip")
        raw = target.read_bytes()
        target.write_bytes(raw[: len(raw) // 2])
    else:
        target = shutil.copytree(good, tmp_path / "b")
        (target / "model.zip").write_bytes(b"PK\x03\x04 not really a zip")
        rehash(target)
    res = _main("backtest", str(target), "--out", str(tmp_path / "runs"), "--no-track")
    assert res.returncode == 2, res.stdout + res.stderr
    errors = [ln for ln in res.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1, res.stderr
    assert "damaged" in errors[0]
    assert "Traceback" not in res.stderr
