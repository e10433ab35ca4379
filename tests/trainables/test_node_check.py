"""Every trial checks, on the node it landed on, that the study's storage is there (issue 20, item 6): the
driver's own check runs while a cluster that scales from zero has one node, so a worker that joined later without
the shared mount, or without the store's credentials, is found here, with one line naming the node."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

import trainables.tune as tune_module
from trainables.tune import TrialContext, TrialFailed, check_node

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "study"))  # moto_server, the tests' S3 server


@pytest.fixture(autouse=True)
def node_label(monkeypatch):
    monkeypatch.setattr(tune_module, "_node_label", lambda: "worker-7 (10.0.0.7, node 1a2b3c4d)")


def test_a_node_that_sees_the_study_directory_passes(tmp_path):
    (tmp_path / "study.toml").write_text("# resolved study\n")
    check_node(TrialContext(train={}, study_dir=str(tmp_path), metric="m"))


def test_a_node_without_the_shared_mount_is_named_in_one_line(tmp_path):
    missing = tmp_path / "not-mounted" / "demo"
    with pytest.raises(TrialFailed) as err:
        check_node(TrialContext(train={}, study_dir=str(missing), metric="m"))
    message = str(err.value)
    assert "\n" not in message and message.startswith("node worker-7 (10.0.0.7, node 1a2b3c4d) does not see")
    assert f"{missing} (no study.toml there)" in message and "same path on every node" in message
    assert not missing.exists()  # nothing written where the storage should have been


def test_a_node_without_the_stores_credentials_is_named_in_one_line(tmp_path, monkeypatch):
    """A real S3 API (moto's server) that checks signatures: one unsigned call makes the bucket, after which the
    node's unknown key is refused; check_node turns that into one line."""
    from moto_server import moto_server

    with moto_server(tmp_path, "studies", server_env={"INITIAL_NO_AUTH_ACTION_COUNT": "1"}) as env:
        for key, value in {**env, "AWS_ACCESS_KEY_ID": "not-a-key", "AWS_SECRET_ACCESS_KEY": "wrong"}.items():
            monkeypatch.setenv(key, value)
        monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
        store = "s3://studies/prefix/demo"
        with pytest.raises(TrialFailed) as err:
            check_node(TrialContext(train={}, study_dir="", metric="m", store=store))
    message = str(err.value)
    assert "\n" not in message and message.startswith("node worker-7 (10.0.0.7, node 1a2b3c4d) cannot reach")
    assert f"the study's store {store} (OSError: " in message and "AWS_ACCESS_KEY_ID" in message, message
    assert "InvalidAccessKeyId" in message or "ACCESS_DENIED" in message.upper(), message  # refused, not missing
