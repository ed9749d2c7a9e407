"""The serving seam: what every serving target offers the deploy stage, whatever runs the model.

A serving target serves one environment's champion. The deploy stage only speaks this
Protocol, so the local scoring server, a SageMaker endpoint and an Azure ML online endpoint are
interchangeable implementations chosen by ``backends.serving``. Nothing a caller gets back names
a process or a port: :class:`LiveModel` says *what* is live and *where clients send requests*
(``endpoint``: a URL for the local server, an endpoint name for a cloud target).

Every method is safe to call again after a crash or a retry: deploying the version that is
already live changes nothing; rolling back when nothing was live before returns None.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

    from mlops_core.serving import Deployment, LocalModelServer


@dataclass(frozen=True)
class LiveModel:
    """What a serving target serves.

    :param target: the serving target, e.g. ``local:dev`` or ``sagemaker:churn-prod``.
    :param model_version: registry version being served.
    :param model_sha256: digest of the served files, as verified at deploy time ("" if unknown).
    :param endpoint: where scoring requests go (a URL, or a cloud endpoint's name).
    :param deployed_at: when this version went live (ISO 8601, UTC).
    :param healthy: the target answered its health check when this was read.
    """

    target: str
    model_version: str
    model_sha256: str
    endpoint: str
    deployed_at: str
    healthy: bool

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class SmokeResult:
    """The answer to held-out rows sent to the live model: one prediction per row."""

    predictions: list[Any]
    latency_ms: float
    model_version: str
    endpoint: str


@runtime_checkable
class Serving(Protocol):
    """A serving target for one environment (``backends.serving``)."""

    def live(self) -> LiveModel | None:
        """What is live now, with ``healthy`` read from the target; None when nothing is deployed."""
        ...

    def deploy(self, model_uri: str, model_version: str, *, expected_sha256: str, startup_timeout: int) -> LiveModel:
        """Serve registry version ``model_version`` (at ``model_uri``) once its files match
        ``expected_sha256``; a no-op when that version is already live. On failure the target keeps
        (or restores) what served before and raises."""
        ...

    def verify(self, expected_version: str, expected_sha256: str | None = None) -> bool:
        """True when the target serves ``expected_version`` (from files with that digest) and is healthy."""
        ...

    def smoke_test(self, rows: pd.DataFrame) -> SmokeResult:
        """Score ``rows`` on the live model; raises when the answer is not one prediction per row."""
        ...

    def rollback(self, *, startup_timeout: int) -> LiveModel | None:
        """Serve again the version that was live before the current one; None when there was none."""
        ...

    def stop(self) -> LiveModel | None:
        """Stop serving; what was live, or None."""
        ...


class LocalServing:
    """``backends.serving: local``: :class:`~mlops_core.serving.LocalModelServer` behind :class:`Serving`.

    The server keeps its process records (pid, port, log) to itself; this adapter turns them into
    :class:`LiveModel`. ``server`` is there for local tooling (``make up``, the demo, tests).
    """

    def __init__(self, server: LocalModelServer, env: str) -> None:
        self.server = server
        self.target = f"local:{env}"

    def __repr__(self) -> str:
        return f"LocalServing({self.server!r})"

    def _live(self, deployment: Deployment, healthy: bool) -> LiveModel:
        return LiveModel(
            target=self.target,
            model_version=deployment.model_version,
            model_sha256=deployment.model_sha256,
            endpoint=deployment.url,
            deployed_at=deployment.started_at,
            healthy=healthy,
        )

    def live(self) -> LiveModel | None:
        from mlops_core.serving import Deployment

        current = self.server.current()
        if current is None:
            return None
        return self._live(Deployment.from_dict(current), bool(current.get("alive")))

    def deploy(self, model_uri: str, model_version: str, *, expected_sha256: str, startup_timeout: int) -> LiveModel:
        deployment = self.server.deploy(
            model_uri, model_version, startup_timeout=startup_timeout, expected_sha256=expected_sha256
        )
        return self._live(deployment, True)

    def verify(self, expected_version: str, expected_sha256: str | None = None) -> bool:
        return self.server.verify(expected_version, expected_sha256)

    def smoke_test(self, rows: pd.DataFrame) -> SmokeResult:
        answer = self.server.smoke_test(rows)
        return SmokeResult(answer["predictions"], answer["latency_ms"], answer["model_version"], answer["url"])

    def rollback(self, *, startup_timeout: int) -> LiveModel | None:
        deployment = self.server.rollback(startup_timeout)
        return None if deployment is None else self._live(deployment, True)

    def stop(self) -> LiveModel | None:
        deployment = self.server.stop()
        return None if deployment is None else self._live(deployment, False)
