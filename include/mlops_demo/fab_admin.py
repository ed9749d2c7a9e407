"""``python -m mlops_demo.fab_admin``: create the first FAB admin user from the environment (idempotent).

The compose stack's ``airflow-init`` runs it after ``airflow db migrate``. ``airflow users create
--password ...`` would put the password on a command line (every user of the host sees container
processes with ``ps``); this reads it from ``AIRFLOW_ADMIN_PASSWORD`` instead, with
``AIRFLOW_ADMIN_USERNAME`` (default ``admin``) and ``AIRFLOW_ADMIN_EMAIL``. An existing user is
left as it is (change a password in the UI or with ``airflow users reset-password``).
"""

from __future__ import annotations

import os
import sys


def main() -> int:
    username = os.environ.get("AIRFLOW_ADMIN_USERNAME") or "admin"
    password = os.environ.get("AIRFLOW_ADMIN_PASSWORD") or ""
    email = os.environ.get("AIRFLOW_ADMIN_EMAIL") or f"{username}@example.invalid"
    if len(password) < 12:
        print("error: set AIRFLOW_ADMIN_PASSWORD (at least 12 characters) in .env", file=sys.stderr)
        return 2
    from airflow.providers.fab.auth_manager.cli_commands.utils import get_application_builder

    with get_application_builder() as appbuilder:
        security = appbuilder.sm
        if security.find_user(username=username) is not None:
            print(f"FAB user {username!r} exists; left unchanged")
            return 0
        role = security.find_role("Admin")
        if role is None:
            print("error: no FAB role 'Admin': run `airflow db migrate` first", file=sys.stderr)
            return 1
        if not security.add_user(username, "Admin", "User", email, role, password):
            print(f"error: FAB could not create user {username!r}", file=sys.stderr)
            return 1
    print(f"created FAB user {username!r} with role Admin")
    return 0


if __name__ == "__main__":
    sys.exit(main())
