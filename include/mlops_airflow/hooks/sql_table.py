"""Read a SQL table incrementally through the common-sql provider, from any SQLAlchemy URL."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from airflow.providers.common.sql.hooks.sql import DbApiHook

if TYPE_CHECKING:
    import pandas as pd
    from sqlalchemy.engine import URL

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?$")


class SqlTableHook(DbApiHook):
    """A common-sql ``DbApiHook`` whose connection is a plain SQLAlchemy URL.

    The URL comes from the connection's extra ``sqlalchemy_url`` (works for every dialect,
    e.g. ``sqlite:////data/app.db``), or else from the connection URI itself
    (``postgresql://user@host:5432/db``). Define the connection in the environment or a secrets
    backend, e.g.::

        AIRFLOW_CONN_CHURN_DB='{"conn_type": "generic", "extra": {"sqlalchemy_url": "postgresql://app@db/app"}}'

    :param sql_conn_id: the Airflow connection id.
    """

    conn_name_attr = "sql_conn_id"
    default_conn_name = "mlops_sql_default"
    conn_type = "generic"
    hook_name = "SQL table (SQLAlchemy URL)"
    supports_autocommit = True

    @property
    def sqlalchemy_url(self) -> URL:
        from sqlalchemy.engine import make_url

        extra = self.connection_extra or {}
        raw = extra.get("sqlalchemy_url") or self.get_uri()
        if raw.startswith("postgres://"):  # Airflow's historical scheme; SQLAlchemy wants postgresql
            raw = "postgresql://" + raw[len("postgres://") :]
        return make_url(raw)

    def get_conn(self) -> Any:
        return self.get_sqlalchemy_engine().raw_connection()

    def read_after_watermark(self, table: str, watermark_column: str, after: str | None, limit: int) -> pd.DataFrame:
        """Rows with ``watermark_column > after`` (all rows when ``after`` is None), oldest first."""
        import pandas as pd
        from sqlalchemy import text

        for name in (table, watermark_column):
            if not _IDENTIFIER.match(name):
                raise ValueError(f"{name!r} is not a plain SQL identifier (letters, digits, '_', optional schema.)")
        engine = self.get_sqlalchemy_engine()
        quote = engine.dialect.identifier_preparer.quote
        qtable = ".".join(quote(p) for p in table.split("."))
        qcol = quote(watermark_column)
        where = f"WHERE {qcol} > :after " if after is not None else ""
        # Identifiers passed the regex above and are quoted by the dialect; values are bound.
        sql = text(f"SELECT * FROM {qtable} {where}ORDER BY {qcol} LIMIT :limit")  # noqa: S608
        params: dict[str, Any] = {"limit": int(limit)}
        if after is not None:
            params["after"] = after
        self.log.info("Reading %s where %s > %r (limit %s)", table, watermark_column, after, limit)
        with engine.connect() as conn:
            return pd.read_sql(sql, conn, params=params)
