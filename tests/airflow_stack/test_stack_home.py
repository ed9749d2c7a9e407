"""The files of a stack's AIRFLOW_HOME: owner-only, a stable Fernet key, no per-start secret on disk."""

from __future__ import annotations

import json
import os
import stat

import pytest

from mlops_demo.airflow_stack.stack_home import StackHome, make_private_folder


def _mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def usual_umask():
    old = os.umask(0o022)
    yield
    os.umask(old)


def test_prepare_makes_everything_owner_only(tmp_path, usual_umask):
    home = StackHome(tmp_path / "new" / "airflow")
    home.prepare()
    assert _mode(home.path) == 0o700
    assert _mode(home.log_dir) == 0o700
    for path in (home.config_file, home.secrets_file, home.passwords_file):
        assert _mode(path) == 0o600, path


def test_an_existing_shared_folder_is_tightened(tmp_path, usual_umask):
    folder = tmp_path / "shared"
    folder.mkdir(mode=0o755)
    os.chmod(folder, 0o755)  # noqa: S103 - the shared folder under test
    make_private_folder(folder)
    assert _mode(folder) == 0o700


def test_fernet_key_is_stable_and_stale_secrets_leave_the_disk(tmp_path):
    home = StackHome(tmp_path / "airflow")
    home.path.mkdir()
    # the file as an older version wrote it: per-start secrets stored next to the Fernet key
    home.secrets_file.write_text(json.dumps({"jwt_secret": "old-jwt", "api_secret_key": "old-key", "fernet_key": "k"}))
    assert home.fernet_key() == "k"
    assert json.loads(home.secrets_file.read_text()) == {"fernet_key": "k"}
    assert _mode(home.secrets_file) == 0o600
    assert StackHome(tmp_path / "airflow").fernet_key() == "k"


def test_admin_password_is_created_once(tmp_path):
    home = StackHome(tmp_path / "airflow")
    password = home.admin_password()
    assert len(password) >= 16
    assert StackHome(tmp_path / "airflow").admin_password() == password
    assert json.loads(home.passwords_file.read_text()) == {"admin": password}
