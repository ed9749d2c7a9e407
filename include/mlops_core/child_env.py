"""The environment a child process gets: an explicit allow-list, never a copy of ours.

Airflow's task processes carry the deployment's secrets in their environment (the JWT signing
secret, the Fernet key, the API secret key, ``AIRFLOW_CONN_*`` URLs with passwords). Anything we
start from a task (the training entrypoint, a model server) is given only what it needs to run:
the variables named here, plus what the caller passes explicitly. A name that looks like a
secret never crosses, even when it is allow-listed or passed explicitly by mistake.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping

# Variables a Python child needs to start and behave like its parent (no secrets among them).
ALLOWED_NAMES = frozenset(
    {
        "PATH",
        "HOME",
        "USER",
        "LOGNAME",
        "SHELL",
        "LANG",
        "LANGUAGE",
        "TZ",
        "TMPDIR",
        "TEMP",
        "TMP",
        "VIRTUAL_ENV",
        "PYTHONPATH",
        "PYTHONPYCACHEPREFIX",
        "PYTHONDONTWRITEBYTECODE",
        "PYTHONHASHSEED",
        "SSL_CERT_FILE",
        "SSL_CERT_DIR",
        "REQUESTS_CA_BUNDLE",
        "NO_PROXY",
        "no_proxy",
        "HTTP_PROXY",
        "http_proxy",
        "HTTPS_PROXY",
        "https_proxy",
        "OMP_NUM_THREADS",
        "MKL_NUM_THREADS",
        "OPENBLAS_NUM_THREADS",
        "XDG_CACHE_HOME",
        "XDG_CONFIG_HOME",
    }
)
# Prefixes of variables that are settings, not credentials (still filtered by SECRET_NAME).
ALLOWED_PREFIXES = ("LC_", "MLOPS_")
# Never passed on, whatever the caller asks: Airflow's own configuration and connections, and
# anything whose name says it is a credential.
SECRET_NAME = re.compile(
    r"^(AIRFLOW__|AIRFLOW_CONN_|AIRFLOW_VAR_|_AIRFLOW)|SECRET|PASSWORD|PASSWD|TOKEN|FERNET|CREDENTIAL|"
    r"PRIVATE|(^|_)(API_?)?KEY($|_)|ACCESS_KEY|SAS($|_)|CONNECTION_STRING",
    re.IGNORECASE,
)


def is_secret_name(name: str) -> bool:
    """True for variable names that must never reach a child process."""
    return bool(SECRET_NAME.search(name))


def child_environment(
    extra: Mapping[str, str] | None = None,
    *,
    allow: Iterable[str] = (),
    source: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The environment for a child process.

    Args:
        extra: variables the child needs, set explicitly (e.g. ``MLFLOW_TRACKING_URI``).
        allow: further names to copy from ``source`` when present.
        source: where inherited values come from (default: ``os.environ``).

    Returns:
        The allow-listed variables of ``source``, then ``extra``; names that look like secrets
        are dropped from both.
    """
    source = os.environ if source is None else source
    wanted = set(ALLOWED_NAMES) | set(allow)
    env = {
        name: value
        for name, value in source.items()
        if (name in wanted or name.startswith(ALLOWED_PREFIXES)) and not is_secret_name(name)
    }
    for name, value in (extra or {}).items():
        if is_secret_name(name):
            raise ValueError(f"refusing to pass {name!r} to a child process: its name marks it as a secret")
        env[name] = value
    return env
