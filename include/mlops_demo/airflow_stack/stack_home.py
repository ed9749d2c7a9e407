"""The isolated ``AIRFLOW_HOME`` of a stack on disk: private folders, ``airflow.cfg``, the stored secrets.

Everything here is owner-only: folders are created (or tightened) to 0700 and files written with
mode 0600 through :func:`mlops_core.atomic_files.write_atomic`, so no file is ever readable by
another user, not even for a moment.

What is stored, and why (everything else is generated per start, see ``component_env``):

* ``airflow_stack.secrets.json`` holds the **Fernet key** only. It must stay the same for the
  life of the home: Airflow encrypts the connections and variables stored in its database with it,
  and a new key would make them unreadable. Older versions of this file also held the JWT secret
  and the API secret key; loading the file removes them from disk.
* ``simple_auth_manager_passwords.json.generated`` holds the ``admin`` password of the simple auth
  manager, written by us before Airflow starts so that Airflow never generates (and logs) one.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import stat
from pathlib import Path

from mlops_core.atomic_files import write_atomic

SECRETS_FILE = "airflow_stack.secrets.json"
PASSWORDS_FILE = "simple_auth_manager_passwords.json.generated"
CONFIG_FILE = "airflow.cfg"
PRIVATE_FOLDER_MODE = 0o700
PRIVATE_FILE_MODE = 0o600

_MINIMAL_CONFIG = (
    "# Written by mlops_demo.airflow_stack. Its settings come from AIRFLOW__* environment\n"
    "# variables (mlops_demo.airflow_stack.component_env), which take precedence over this file.\n"
    "[core]\n"
)


def make_private_folder(path: Path) -> Path:
    """Create ``path`` (and missing parents) and make ``path`` itself owner-only (0700).

    An existing folder is tightened to 0700 too; what it already contains is not changed, but
    nobody else can reach it any more. Raises ``PermissionError`` for a folder owned by someone
    else (its mode cannot be changed by us).
    """
    path.mkdir(parents=True, exist_ok=True, mode=PRIVATE_FOLDER_MODE)
    if stat.S_IMODE(path.stat().st_mode) != PRIVATE_FOLDER_MODE:
        os.chmod(path, PRIVATE_FOLDER_MODE)
    return path


class StackHome:
    """The files of one ``AIRFLOW_HOME``: folders, ``airflow.cfg``, the Fernet key, the admin password."""

    def __init__(self, path: Path | str, username: str = "admin") -> None:
        self.path = Path(path).expanduser().resolve()
        self.username = username

    @property
    def log_dir(self) -> Path:
        return self.path / "logs"

    @property
    def config_file(self) -> Path:
        return self.path / CONFIG_FILE

    @property
    def db_path(self) -> Path:
        return self.path / "airflow.db"

    @property
    def secrets_file(self) -> Path:
        return self.path / SECRETS_FILE

    @property
    def passwords_file(self) -> Path:
        return self.path / PASSWORDS_FILE

    def prepare(self) -> None:
        """Create the home and its log folder owner-only, a minimal ``airflow.cfg``, the secrets."""
        make_private_folder(self.path)
        make_private_folder(self.log_dir)
        if not self.config_file.exists():
            # Without a file Airflow writes a full default config, our environment baked in, into it.
            write_atomic(self.config_file, _MINIMAL_CONFIG, mode=PRIVATE_FILE_MODE)
        self.fernet_key()
        self.admin_password()

    def fernet_key(self) -> str:
        """The home's Fernet key: created once, then the same for every start (see the module doc)."""
        data: dict[str, str] = {}
        if self.secrets_file.exists():
            raw = json.loads(self.secrets_file.read_text(encoding="utf-8"))
            if not isinstance(raw, dict):
                raise ValueError(f"{self.secrets_file}: expected a JSON object; delete the file to start over")
            data = {str(k): str(v) for k, v in raw.items()}
        key = data.get("fernet_key") or base64.urlsafe_b64encode(secrets.token_bytes(32)).decode()
        if data != {"fernet_key": key}:  # new, or stale per-start secrets of an older version on disk
            make_private_folder(self.path)
            write_atomic(self.secrets_file, json.dumps({"fernet_key": key}, indent=2) + "\n", mode=PRIVATE_FILE_MODE)
        return key

    def admin_password(self) -> str:
        """The password of :attr:`username` (created on first use; stable for the home)."""
        passwords: dict[str, str] = {}
        if self.passwords_file.exists():
            text = self.passwords_file.read_text(encoding="utf-8").strip()
            passwords = json.loads(text) if text else {}
        if not passwords.get(self.username):
            passwords[self.username] = secrets.token_urlsafe(12)
            make_private_folder(self.path)
            write_atomic(self.passwords_file, json.dumps(passwords) + "\n", mode=PRIVATE_FILE_MODE)
        return passwords[self.username]
