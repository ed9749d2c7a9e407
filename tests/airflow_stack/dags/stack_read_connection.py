"""Test DAG: a task that reads the connection named in ``conf["conn_id"]`` the Airflow 3 way.

It returns the connection's fields, and of its password only a SHA-256 digest (an XCom is stored
in the metadata database and shown in the UI: a test must not put a secret there either).
"""

from __future__ import annotations

import hashlib

from airflow.sdk import BaseHook, dag, get_current_context, task


@dag(dag_id="stack_read_connection", schedule=None, catchup=False, tags=["airflow_stack_test"])
def stack_read_connection():
    @task
    def read_connection() -> dict:
        conn = BaseHook.get_connection(get_current_context()["dag_run"].conf["conn_id"])
        return {
            "conn_type": conn.conn_type,
            "host": conn.host,
            "login": conn.login,
            "password_sha256": hashlib.sha256((conn.password or "").encode()).hexdigest(),
        }

    read_connection()


stack_read_connection()
