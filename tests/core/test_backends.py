"""Backend selection: the environment's backends come from its settings, built once as a bundle."""

from __future__ import annotations

import pytest

from mlops_core.backends import BackendNotAvailable, backends_for, compute_backend, object_store
from mlops_core.compute import LocalJobCompute
from mlops_core.settings import load_settings, with_overrides
from mlops_core.storage import LocalObjectStore


def test_local_backends_are_chosen_from_settings(mlops_home):
    settings = load_settings("dev")
    assert isinstance(object_store(settings), LocalObjectStore)
    compute = compute_backend(settings)
    assert isinstance(compute, LocalJobCompute)
    assert compute.state_dir == settings.home / "jobs"
    assert compute.store.root == LocalObjectStore(settings.storage_root).root


def test_unbuilt_backend_fails_clearly(mlops_home):
    settings = with_overrides(load_settings("dev"), backends={"compute": "azure", "storage": "azure"})
    with pytest.raises(BackendNotAvailable, match=r"backends\.compute = 'azure' is not available in this version"):
        compute_backend(settings, LocalObjectStore(mlops_home / "store"))


def test_aws_backends_say_where_they_are_built(mlops_home):
    aws = with_overrides(
        load_settings("dev"),
        backends={"storage": "aws", "compute": "aws"},
        storage={"root": "s3://bucket/mlops/dev"},
        aws={"sagemaker_role_arn": "arn:aws:iam::123456789012:role/r", "training_image": "img:1"},
    )
    for build in (object_store, lambda s: compute_backend(s, LocalObjectStore(mlops_home / "store"))):
        with pytest.raises(BackendNotAvailable, match=r"mlops_airflow\.backends\.backends_for"):
            build(aws)


def test_the_bundle_shares_one_store_and_builds_the_registry_once(mlops_home):
    settings = load_settings("dev")
    backends = backends_for(settings)
    assert backends.compute.store is backends.store
    assert backends.registry is backends.registry  # built on first use, then kept
    given = LocalObjectStore(mlops_home / "elsewhere")
    assert backends_for(settings, store=given).compute.store is given
