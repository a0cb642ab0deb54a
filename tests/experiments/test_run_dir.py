"""One run per run folder: claim_run_dir refuses, resumes or overwrites (no training needed)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from coinrl.experiments.run_dir import RUN_FILE, claim_run_dir
from coinrl.pipeline.errors import ConfigError

IDENTITY = {"name": "demo", "train": {"algo": "ppo", "ppo": {"learning_rate": 0.0003}}, "data_fingerprint": "ab"}


def test_a_new_folder_is_claimed_with_a_run_id(tmp_path: Path) -> None:
    record = claim_run_dir(tmp_path / "demo", IDENTITY)
    on_disk = json.loads((tmp_path / "demo" / RUN_FILE).read_text())
    assert on_disk["run_id"] == record["run_id"]
    assert len(record["run_id"]) == 32
    assert on_disk["identity"] == IDENTITY


def test_an_occupied_folder_needs_resume_or_overwrite(tmp_path: Path) -> None:
    run = tmp_path / "demo"
    first = claim_run_dir(run, IDENTITY)
    (run / "checkpoints" / "step_000000303104").mkdir(parents=True)
    with pytest.raises(ConfigError, match=f"already holds run {first['run_id']}"):
        claim_run_dir(run, IDENTITY)
    assert claim_run_dir(run, IDENTITY, resume=True)["run_id"] == first["run_id"]
    again = claim_run_dir(run, IDENTITY, overwrite=True)
    assert again["run_id"] != first["run_id"]
    assert not (run / "checkpoints").exists()  # the old run's checkpoints cannot be resumed


def test_resume_names_the_keys_of_a_different_run(tmp_path: Path) -> None:
    run = tmp_path / "demo"
    claim_run_dir(run, IDENTITY)
    other = {**IDENTITY, "train": {"algo": "ppo", "ppo": {"learning_rate": 0.001}}, "data_fingerprint": "cd"}
    with pytest.raises(ConfigError, match=r"differs in data_fingerprint, train\.ppo\.learning_rate"):
        claim_run_dir(run, other, resume=True)


def test_a_folder_without_run_json_is_refused_for_a_new_run_and_adopted_on_resume(tmp_path: Path) -> None:
    run = tmp_path / "demo"
    (run / "checkpoints").mkdir(parents=True)  # written by a coinrl before run.json
    with pytest.raises(ConfigError, match="already holds an earlier run"):
        claim_run_dir(run, IDENTITY)
    claim_run_dir(run, IDENTITY, resume=True)
    assert (run / RUN_FILE).is_file()


def test_overwrite_refuses_folders_holding_other_files(tmp_path: Path) -> None:
    run = tmp_path / "demo"
    run.mkdir()
    (run / "notes.txt").write_text("keep me")
    with pytest.raises(ConfigError, match="notes.txt"):
        claim_run_dir(run, IDENTITY, overwrite=True)
    assert (run / "notes.txt").read_text() == "keep me"
    with pytest.raises(ConfigError, match="one of them"):
        claim_run_dir(run, IDENTITY, resume=True, overwrite=True)
