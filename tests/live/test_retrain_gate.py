"""The retrain gate: a bad challenger is rejected, a better one passes, on bars neither trained on.

The champions here are planted policies (weights set by hand: long when the signal says so),
so the tests judge the gate, not how many PPO steps a good policy takes to learn (that is the
known-answer test's job, ~300k steps).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from retrain_helpers import head, market, oracle_bundle, shuffle_signal

from coinrl.agents.bundle import load_model
from coinrl.live.journal import Journal
from coinrl.live.retrain import retrain_once
from coinrl.live.retrain_config import RetrainConfig
from coinrl.live.retrain_gate import gate_challenger

FLIP = 1_000  # bars before the planted relation flips sign


@pytest.fixture(scope="module")
def flipped():
    return market(FLIP, 1_000, seed=4)


@pytest.fixture(scope="module")
def oracles(tmp_path_factory, flipped) -> tuple[Path, Path]:
    """(long-when-signal-positive, long-when-signal-negative): the best policy before the flip
    and the best after it."""
    root = tmp_path_factory.mktemp("oracles")
    train = head(flipped, 800)
    return oracle_bundle(root / "old", train, 1.0), oracle_bundle(root / "new", train, -1.0)


def _gate_frame(frame, start: int):
    out = frame.iloc[start:].reset_index(drop=True)
    out.attrs = dict(frame.attrs)
    return out


def test_the_gate_passes_a_challenger_that_is_better_on_the_newest_bars_and_rejects_the_reverse(oracles, flipped) -> None:
    old, new = (load_model(p) for p in oracles)
    gate = _gate_frame(flipped, 1_700)  # after the flip
    cfg = RetrainConfig(n_boot=500)
    passed, figures, reasons = gate_challenger(new, old, gate, cfg, n_trials=1)
    assert passed, reasons
    assert figures["p_better"] >= 0.8
    assert figures["p_beats_cash"] >= 0.5
    assert figures["challenger_total_return"] > 0 > figures["champion_total_return"]
    passed, figures, reasons = gate_challenger(old, new, gate, cfg, n_trials=1)
    assert not passed
    assert any("champion" in r for r in reasons)
    assert any("cash" in r for r in reasons)


def test_the_deflated_sharpe_rule_counts_every_challenger_tried(oracles, flipped) -> None:
    old, new = (load_model(p) for p in oracles)
    gate = _gate_frame(flipped, 1_950)  # 50 bars: a short, noisy slice
    cfg = RetrainConfig(n_boot=300, min_p_better=0.0, min_p_beats_cash=0.0, min_dsr=0.9)
    _, one, _ = gate_challenger(new, old, gate, cfg, n_trials=1)
    _, many, _ = gate_challenger(new, old, gate, cfg, n_trials=500)
    assert many["dsr"] < one["dsr"]
    assert many["n_trials"] == 500


def test_a_challenger_trained_on_shuffled_signals_is_rejected_and_the_journal_says_why(oracles, flipped, tmp_path) -> None:
    old, _ = oracles
    frame = head(flipped, FLIP)  # before the flip: the old oracle is the best policy there
    cfg = RetrainConfig(window_bars=500, gate_bars=200, total_timesteps=4096, subprocess=False, seed=1, n_boot=500)
    train_stop = FLIP - 200 - 1  # gate 200 bars, embargo = warm-up 0 + window 1
    poisoned = shuffle_signal(frame, 0, train_stop, seed=3)
    with Journal(tmp_path / "j.sqlite", run_id="live-1") as j:
        out = retrain_once(old, poisoned, cfg, tmp_path / "out", j)
        gate_row = [e.payload for e in j.events("model")][-1]
    assert out.status == "rejected"
    assert out.gate["p_better"] < 0.8
    assert out.gate["champion_total_return"] > 0.2  # the champion really is good there
    assert gate_row["event"] == "retrain_gate"
    assert gate_row["verdict"] == "rejected"
    assert gate_row["reasons"] == out.reasons
    assert out.reasons


def test_a_challenger_the_live_session_could_not_reload_is_rejected_before_any_backtest(oracles, flipped, tmp_path) -> None:
    from retrain_helpers import ENV, SPEC, train_config

    from coinrl.agents.bundle import save_model
    from coinrl.agents.config import TrainConfig
    from coinrl.agents.train import train_model
    from coinrl.pipeline.splits import prepare_data_for_model

    prepared = prepare_data_for_model(head(flipped, 400), spec=SPEC, split={"train": 0.85, "validation": 0.15, "test": 0.0})
    wider = train_model(prepared, TrainConfig.model_validate(train_config(512)), ENV.model_copy(update={"window": 2}))
    other = load_model(save_model(wider, tmp_path / "wider"))
    passed, _, reasons = gate_challenger(other, load_model(oracles[1]), _gate_frame(flipped, 1_700), RetrainConfig(), n_trials=1)
    assert not passed
    assert "spaces" in reasons[0]


@pytest.mark.slow
def test_a_challenger_retrained_after_the_planted_relation_flips_passes_the_gate_and_is_promoted(tmp_path) -> None:
    """The honest end to end: the champion (best policy of the old market) loses once the
    planted relation flips; PPO retrained on the newest window (its recorded config: the
    shipped TrainConfig defaults, 150k steps, in the niced child) beats it and cash on the
    gate slice and is promoted into the live folder, every step journalled. ~15-40 s."""
    from coinrl.live.retrain import bundle_id
    from coinrl.live.retrain_promote import promote_challenger

    frame = market(FLIP, 5_200, seed=4)
    shipped = {"seed": 0, "progress_bar": False, "torch_threads": 1}
    live = oracle_bundle(tmp_path / "live", head(frame, 800), 1.0, train=shipped)
    cfg = RetrainConfig(window_bars=4_000, gate_bars=1_000, total_timesteps=150_000, seed=0)
    with Journal(tmp_path / "j.sqlite", run_id="live-1") as j:
        out = retrain_once(live, frame, cfg, tmp_path / "out", j)
        assert out.status == "promoted", (out.reasons, out.gate)
        assert out.gate["champion_total_return"] < 0 < out.gate["challenger_total_return"]
        assert out.challenger is not None
        promote_challenger(out.challenger, live, j)
        events = [e.payload["event"] for e in j.events("model")]
    assert bundle_id(live) == bundle_id(out.challenger)
    assert events == ["retrain_start", "retrain_end", "retrain_gate", "promote_start", "promote_end"]
