"""The registry-mirror seam: MLflow stays the system of record; a mirror copies versions to a cloud registry.

Platform teams often need registered models visible in their cloud's own registry (a SageMaker
model package group, an Azure ML registry) for audits, deployment tooling or approvals there.
A mirror receives every version the evaluate stage registers, with its metrics and lineage, and
follows the promotion gate: a version the gate (or an approver) rejects is rejected in the
mirror, a version that becomes ``@champion`` is approved there. ``backends.registry_mirror``
chooses the implementation; ``none`` (:class:`NoMirror`) keeps MLflow alone.

Every call must be idempotent by (model name, version): stages retry, and a retried
registration mirrors the same version once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable


@dataclass(frozen=True)
class MirroredVersion:
    """One registered version as a mirror receives it.

    :param model_name: the MLflow registered model (``<env>.<model>``).
    :param version: its MLflow version.
    :param model_uri: where the mirror can fetch the files (``models:/name/version``).
    :param model_sha256: digest of the files recorded when the model was logged.
    :param metrics: held-out metrics from the evaluation.
    :param lineage: MLflow run id, dataset versions, training set, git commit (``mlops.*`` tags).
    """

    model_name: str
    version: str
    model_uri: str
    model_sha256: str
    metrics: dict[str, float] = field(default_factory=dict)
    lineage: dict[str, str] = field(default_factory=dict)


@runtime_checkable
class RegistryMirror(Protocol):
    """A cloud model registry that follows the MLflow registry (``backends.registry_mirror``)."""

    def mirror(self, version: MirroredVersion) -> str | None:
        """Copy ``version`` (pending approval); return its reference in the mirror (an ARN, an id),
        or None when nothing is mirrored. Mirroring a version already there returns its reference."""
        ...

    def approve(self, model_name: str, version: str, *, approved_by: str | None, reason: str | None = None) -> None:
        """The version became ``@champion`` (or an operator approves it): mark it approved in the mirror,
        with ``reason`` as the recorded description when given. Approving an approved version with the
        same description changes nothing."""
        ...

    def reject(self, model_name: str, version: str, *, reason: str) -> None:
        """The gate or an approver turned the version down: mark it rejected, with the reason.
        Rejecting a rejected version with the same reason changes nothing."""
        ...


class NoMirror:
    """``backends.registry_mirror: none``: MLflow is the only registry; nothing is copied anywhere."""

    def __repr__(self) -> str:
        return "NoMirror()"

    def mirror(self, version: MirroredVersion) -> str | None:
        return None

    def approve(self, model_name: str, version: str, *, approved_by: str | None, reason: str | None = None) -> None:
        return None

    def reject(self, model_name: str, version: str, *, reason: str) -> None:
        return None
