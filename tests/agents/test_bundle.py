"""Bundles: same actions after a round trip, tampering and mismatches refused, no secrets."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from coinrl.agents.agent import TrainedAgent
from coinrl.agents.bundle import (
    MANIFEST,
    load_model,
    save_model,
    sha256_file,
)
from coinrl.agents.rollout import rollout_policy
from coinrl.envs.vector import TradingVectorEnv
from coinrl.pipeline.errors import ConfigError, DataError
from coinrl.pipeline.splits import PreparedData


def _observations(agent: TrainedAgent, planted: PreparedData) -> np.ndarray:
    venv = TradingVectorEnv(64, planted.validation, agent.env_config)
    obs, _ = venv.reset(seed=3)
    return np.array(obs, copy=True)


def _rewrite(bundle: Path, name: str, text: str) -> None:
    """Edit a bundle file AND its manifest hash (a consistent but different bundle)."""
    (bundle / name).write_text(text, encoding="utf-8")
    manifest = json.loads((bundle / MANIFEST).read_text())
    manifest["files"][name] = sha256_file(bundle / name)
    (bundle / MANIFEST).write_text(json.dumps(manifest))


@pytest.fixture
def bundle(trained: TrainedAgent, tmp_path: Path) -> Path:
    return save_model(trained, tmp_path / "bundle")


@pytest.mark.slow
def test_round_trip_gives_identical_actions(
    trained: TrainedAgent, planted: PreparedData, bundle: Path
) -> None:
    loaded = load_model(bundle)
    obs = _observations(trained, planted)
    np.testing.assert_array_equal(loaded.predict(obs), trained.predict(obs))
    assert loaded.env_config == trained.env_config
    assert loaded.train_config == trained.train_config
    assert loaded.feature_spec.fingerprint() == trained.feature_spec.fingerprint()
    # the whole validation run is the same, bar for bar
    a = rollout_policy(trained.model, planted.validation, trained.env_config)
    b = rollout_policy(loaded.model, planted.validation, loaded.env_config)
    np.testing.assert_array_equal(a.actions, b.actions)
    np.testing.assert_array_equal(a.equity_quote, b.equity_quote)


def test_zipped_bundle_round_trip(trained: TrainedAgent, planted: PreparedData, tmp_path: Path) -> None:
    path = save_model(trained, tmp_path / "agent.zip")
    assert path.is_file()
    obs = _observations(trained, planted)
    np.testing.assert_array_equal(load_model(path).predict(obs), trained.predict(obs))


def test_bundle_records_provenance_and_versions(trained: TrainedAgent, bundle: Path) -> None:
    data = json.loads((bundle / "data.json").read_text())
    for key in ("source", "symbol", "timeframe", "start_ts_ms", "end_ts_ms", "data_fingerprint"):
        assert key in data
    assert data["data_fingerprint"] == trained.data_info["data_fingerprint"]
    versions = json.loads((bundle / "versions.json").read_text())["libraries"]
    assert set(versions) >= {"coinrl", "stable-baselines3", "torch", "gymnasium", "numpy", "pandas"}
    manifest = json.loads((bundle / MANIFEST).read_text())
    assert set(manifest["files"]) >= {"model.zip", "config.yaml", "feature_spec.yaml", "normaliser.json"}


def test_normaliser_is_the_one_fitted_on_the_train_split(
    trained: TrainedAgent, planted: PreparedData, bundle: Path
) -> None:
    loaded = load_model(bundle)
    rows = planted.main_fold.train
    train_raw = planted.raw_features[rows.start : rows.stop]
    np.testing.assert_allclose(loaded.normaliser.center, train_raw.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(loaded.normaliser.scale, train_raw.std(axis=0), rtol=1e-12)
    # refitting on all rows would give other statistics: this test would catch it
    assert not np.allclose(loaded.normaliser.center, planted.raw_features.mean(axis=0), rtol=1e-6)


@pytest.mark.parametrize("name", ["model.zip", "normaliser.json", "config.yaml"])
def test_tampered_file_is_refused(bundle: Path, name: str) -> None:
    path = bundle / name
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    path.write_bytes(bytes(raw))
    with pytest.raises(DataError, match=rf"{name}.*sha256"):
        load_model(bundle)


def test_missing_file_or_manifest_is_refused(bundle: Path, tmp_path: Path) -> None:
    (bundle / "feature_spec.yaml").unlink()
    with pytest.raises(DataError, match="missing"):
        load_model(bundle)
    with pytest.raises(DataError, match="not a coinrl bundle"):
        load_model(tmp_path)  # a folder without a manifest


def test_changed_feature_spec_is_refused(bundle: Path) -> None:
    spec = (bundle / "feature_spec.yaml").read_text().replace("- 4\n", "- 8\n")
    _rewrite(bundle, "feature_spec.yaml", spec)
    with pytest.raises(ConfigError, match="fingerprint"):
        load_model(bundle)


def test_feature_code_version_change_is_refused(bundle: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import coinrl.pipeline.features as features

    monkeypatch.setattr(features, "FEATURES_VERSION", features.FEATURES_VERSION + 1)
    with pytest.raises(ConfigError, match="feature code changed"):
        load_model(bundle)


def test_major_library_version_mismatch_is_refused(bundle: Path) -> None:
    versions = json.loads((bundle / "versions.json").read_text())
    versions["libraries"]["torch"] = "1.13.1"
    _rewrite(bundle, "versions.json", json.dumps(versions))
    with pytest.raises(ConfigError, match=r"torch 1\.13\.1 \(saved\)"):
        load_model(bundle)
    assert load_model(bundle, allow_version_mismatch=True).algo == "ppo"


def test_secrets_never_reach_a_bundle(trained: TrainedAgent, tmp_path: Path) -> None:
    secret = "SEKRET-0123456789"  # noqa: S105  (a fake secret to look for)
    agent = dataclasses.replace(
        trained,
        experiment_config={
            "name": "x",
            "live": {"exchange": "binance", "api_key": secret, "apiSecret": secret},
            "notes": [{"password": secret, "keep": "visible-value"}],
        },
        info={**trained.info, "token": secret},
    )
    path = save_model(agent, tmp_path / "b")
    blobs = b"".join(p.read_bytes() for p in path.iterdir())
    assert secret.encode() not in blobs
    assert b"visible-value" in (path / "config.yaml").read_bytes()
    assert load_model(path).experiment_config["live"] == {"exchange": "binance"}
