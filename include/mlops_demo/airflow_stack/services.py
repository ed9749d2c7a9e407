"""The PostgreSQL database and the Redis database number of a distributed stack.

A Celery stack keeps Airflow's metadata (and Celery's task results) in a PostgreSQL database and
its task queue in one Redis database number (the Redis server's databases 0-15 are separate key
spaces). :class:`PostgresDatabase` creates a database on a server (``CREATE DATABASE``) and drops it
when asked; :class:`RedisDatabase` claims a database number nobody uses (empty, then a claim key set
with ``NX``) and empties it on release. Tests create and drop their own; ``up --distributed`` keeps
its named database between starts.

No password travels in these URLs: they end up in every component's environment (Airflow reads its
database and broker from there), and a URL with a password is refused. PostgreSQL users authenticate
the libpq way (``~/.pgpass``, ``PGPASSFILE``, trust on loopback), which psycopg and so every
component read themselves.
"""

from __future__ import annotations

import os
import re
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

if TYPE_CHECKING:
    import psycopg
    import redis

DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379"
# Database numbers a stack may claim (13 belongs to the feature-store tests; 0 to whatever else runs).
REDIS_DATABASES = range(1, 13)
REDIS_CLAIM_KEY = "mlops:airflow-stack"
_DB_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


class ServiceError(RuntimeError):
    """PostgreSQL or Redis is unreachable or refused what we asked; the message says what to do."""


def _without_password(url: str, what: str) -> tuple[str, str, int | None, str, str]:
    """(scheme, host, port, user, path) of ``url``; a password is refused (see the module doc)."""
    parts = urlsplit(url)
    if parts.password:
        raise ServiceError(
            f"{what} URL holds a password; it would reach every Airflow component's environment. "
            "Give the URL without it and let libpq read it from ~/.pgpass (PGPASSFILE)"
            if what == "PostgreSQL"
            else f"{what} URL holds a password; use a Redis server on loopback without one for this stack"
        )
    return parts.scheme, parts.hostname or "127.0.0.1", parts.port, parts.username or "", parts.path


@dataclass
class PostgresDatabase:
    """One database on a PostgreSQL server (``server_url``: any database of it, for the admin connection)."""

    server_url: str
    name: str

    def __post_init__(self) -> None:
        if not _DB_NAME.match(self.name):
            raise ServiceError(f"database name {self.name!r}: lower-case letters, digits and _ only")
        scheme, host, port, user, _ = _without_password(self.server_url, "PostgreSQL")
        if scheme.split("+")[0] not in ("postgresql", "postgres"):
            raise ServiceError(f"expected a postgresql:// URL, got {scheme}://")
        netloc = f"{user}@" if user else ""
        self._netloc = f"{netloc}{host}" + (f":{port}" if port else "")

    @classmethod
    def unique(cls, server_url: str = DEFAULT_POSTGRES_URL, prefix: str = "mlops_airflow") -> PostgresDatabase:
        return cls(server_url, f"{prefix}_{uuid.uuid4().hex[:10]}")

    def url(self, driver: str = "postgresql+psycopg") -> str:
        """The database's SQLAlchemy URL (``db+postgresql+psycopg`` for Celery's result backend)."""
        return urlunsplit((driver, self._netloc, f"/{self.name}", "", ""))

    def _admin(self) -> psycopg.Connection[Any]:
        import psycopg

        conninfo = urlunsplit(("postgresql", self._netloc, urlsplit(self.server_url).path or "/postgres", "", ""))
        try:
            return psycopg.connect(conninfo, autocommit=True, connect_timeout=5)
        except psycopg.Error as exc:
            raise ServiceError(
                f"cannot reach PostgreSQL at {conninfo}: {str(exc).strip()} "
                "(scripts/ensure_services.sh starts one on 127.0.0.1:5432)"
            ) from exc

    def exists(self) -> bool:
        with self._admin() as conn:
            return conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (self.name,)).fetchone() is not None

    def create(self, *, exist_ok: bool = False) -> PostgresDatabase:
        """``CREATE DATABASE`` (owner: the URL's user). ``exist_ok``: keep one that is there."""
        from psycopg import sql

        with self._admin() as conn:
            if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (self.name,)).fetchone():
                if exist_ok:
                    return self
                raise ServiceError(f"PostgreSQL database {self.name} already exists")
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(self.name)))
        return self

    def drop(self) -> None:
        """``DROP DATABASE ... WITH (FORCE)``: closes what is still connected. Missing is fine."""
        from psycopg import sql

        with self._admin() as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(self.name)))


@dataclass
class RedisDatabase:
    """One claimed database number of a Redis server, for one stack's Celery queue."""

    server_url: str
    number: int

    @property
    def url(self) -> str:
        scheme, host, port, user, _ = _without_password(self.server_url, "Redis")
        netloc = (f"{user}@" if user else "") + host + f":{port or 6379}"
        return urlunsplit((scheme or "redis", netloc, f"/{self.number}", "", ""))

    def _client(self, number: int) -> redis.Redis:
        import redis

        _, host, port, user, _ = _without_password(self.server_url, "Redis")
        return redis.Redis(host=host, port=port or 6379, username=user or None, db=number, socket_timeout=5)

    @classmethod
    def claim(cls, server_url: str = DEFAULT_REDIS_URL, numbers: range = REDIS_DATABASES) -> RedisDatabase:
        """The first empty database number among ``numbers``, claimed (a key only we set)."""
        import redis

        token = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        probe = cls(server_url, numbers[0])
        for number in numbers:
            client = probe._client(number)
            try:
                if client.dbsize() == 0 and client.set(REDIS_CLAIM_KEY, token, nx=True):
                    if client.dbsize() == 1:
                        return cls(server_url, number)
                    client.delete(REDIS_CLAIM_KEY)  # someone else wrote at the same moment: not ours
            except redis.RedisError as exc:
                raise ServiceError(
                    f"cannot reach Redis at {probe.url.rsplit('/', 1)[0]}: {exc} "
                    "(scripts/ensure_services.sh starts one on 127.0.0.1:6379)"
                ) from exc
            finally:
                client.close()
        raise ServiceError(f"no free Redis database among {numbers.start}-{numbers.stop - 1} on {server_url}")

    def release(self) -> None:
        """Empty the database (the queue, results, the claim). A server that is gone is ignored."""
        import redis

        client = self._client(self.number)
        try:
            client.flushdb()
        except redis.RedisError:
            pass
        finally:
            client.close()
