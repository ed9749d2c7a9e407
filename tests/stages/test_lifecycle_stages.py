"""The lifecycle's stage functions chained without a scheduler, on real components.

Real Feast (local provider), real MLflow (SQLite store), a real MLflow scoring server on
loopback, real Evidently. One module-scoped run walks ingest -> features -> monitor -> train ->
evaluate -> deploy -> drift -> retrain -> promote, and each test checks one outcome of it.
"""

from __future__ import annotations

import json

import pytest

from tests.conftest import isolate_mlops_env


class RecordingMirror:
    """A registry mirror that keeps what it was told (the Protocol's calls, in order), idempotent by
    (model, version) like a real one: the stages' wiring to ``backends.registry_mirror`` is checked
    against it; the cloud mirrors are tested against their services."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []
        self.versions: dict[tuple[str, str], object] = {}

    def mirror(self, version):
        self.calls.append(("mirror", version.model_name, version.version))
        self.versions.setdefault((version.model_name, version.version), version)
        return f"mirror://{version.model_name}/{version.version}"

    def approve(self, model_name, version, *, approved_by):
        self.calls.append(("approve", model_name, str(version), approved_by))

    def reject(self, model_name, version, *, reason):
        self.calls.append(("reject", model_name, str(version), reason))


@pytest.fixture(scope="module")
def lifecycle(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    home = isolate_mlops_env(mp, tmp_path_factory.mktemp("stages") / "mlops")

    import dataclasses

    from mlops_core.backends import backends_for
    from mlops_core.demo_data import DriftSpec, write_bad_files, write_day_files
    from mlops_core.dropzone import scan_drop_zone
    from mlops_core.serving import LocalModelServer
    from mlops_core.settings import load_settings
    from mlops_core.stages import deploy, evaluate, features, ingest, monitor, promote, train

    s = load_settings("dev")
    mirror = RecordingMirror()
    backends = dataclasses.replace(backends_for(s), make_mirror=lambda: mirror)  # built once, as a task does
    staging = dataclasses.replace(backends_for(load_settings("staging")), make_mirror=lambda: mirror)
    drop = s.dataset.drop_zone
    drop.mkdir(parents=True)
    out: dict = {"settings": s, "mirror": mirror}

    def ready():
        return [f.path for f in scan_drop_zone(drop, s.dataset.file_patterns, min_age_seconds=0)]

    def cycle(tag: str, ingested_at: str):
        rep = ingest.ingest_files(s, ready(), backends, run_id=f"ingest-{tag}", ingested_at=ingested_at)
        features.materialize_versions(s, [rep["version_id"]], backends)
        verdict = monitor.check_for_retraining(s, [rep["version_id"]], backends, run_key=f"monitor-{tag}")
        result = {"ingest": rep, "verdict": verdict}
        if tag == "drift":  # a scheduled monitor on the same evidence, then a retry of the first run
            result["again"] = monitor.check_for_retraining(s, [rep["version_id"]], backends, run_key="monitor-cron")
            result["retried"] = monitor.check_for_retraining(s, [rep["version_id"]], backends, run_key="monitor-drift")
        if verdict["retrain"]:
            ts = train.build_training_set(s, f"ts-{tag}", backends)
            job = train.run_training_job(s, ts, f"job-{tag}", backends)
            cand = train.log_candidate(s, ts, job, f"train-{tag}", backends)
            ev = evaluate.evaluate_candidate(s, cand, backends)
            result.update(training_set=ts, job=job, candidate=cand, evaluation=ev)
            if ev["promote"]:
                champ = evaluate.promote_to_champion(s, ev, backends)
                result["deploy"] = deploy.deploy_champion(s, champ["version"], backends)
        return result

    try:
        write_day_files(drop, range(3), rows=600)
        out["bad_files"] = write_bad_files(drop, 2)
        out["initial"] = cycle("initial", "2026-01-04T00:00:00+00:00")
        write_day_files(drop, [3], rows=600)
        out["calm"] = cycle("calm", "2026-01-05T00:00:00+00:00")
        # Concept drift only: the inputs look the same, the label relationship changed. (The
        # end-to-end test covers covariate drift.)
        write_day_files(drop, [4, 5], rows=600, drift=DriftSpec(kind="concept", start_day=4))
        out["drift"] = cycle("drift", "2026-01-07T00:00:00+00:00")
        out["rerun_job"] = train.run_training_job(s, out["initial"]["training_set"], "job-initial", backends)
        plan = promote.plan_promotion("dev", None, backends_for)
        out["promoted"] = promote.copy_champion(plan, staging)
        out["staging_deploy"] = deploy.deploy_champion(load_settings("staging"), out["promoted"]["version"], staging)
        yield out
    finally:
        LocalModelServer.stop_all(home / "serving")
        mp.undo()


def test_initial_cycle_trains_and_serves_a_champion(lifecycle):
    initial = lifecycle["initial"]
    assert initial["verdict"]["reason"] == "no_champion"
    assert initial["evaluation"]["promote"] is True
    assert initial["deploy"]["version"] == initial["evaluation"]["version"]
    assert initial["deploy"]["sample_prediction"] in (0, 1)
    assert len(initial["deploy"]["model_sha256"]) == 64  # what is served was verified against this digest
    assert initial["ingest"]["rejected_rows"] == 3  # the three bad rows of the bad file


def test_training_sets_are_laid_out_as_channels(lifecycle):
    """train/, validation/, test/ (the holdout) under the training set; the job gets one channel per
    non-empty split, each a folder prefix; evaluate and deploy read the holdout from test/."""
    from mlops_core.backends import backends_for, object_store
    from mlops_core.stages import train

    s = lifecycle["settings"]
    ts = lifecycle["initial"]["training_set"]
    store = object_store(s)
    key = ts["key"]
    assert store.list_keys(f"{key}/") == [
        f"{key}/contract/contract.json",  # the contract channel: no hyperparameter size limit
        f"{key}/drift_profile.json",  # the reference profile the monitor's drift decision streams against
        f"{key}/manifest.json",
        f"{key}/reference.parquet",  # the drift reference, written when the model was logged
        f"{key}/test/part-0.parquet",
        f"{key}/train/part-0.parquet",
        f"{key}/validation/part-0.parquet",
    ]
    assert ts["validation_rows"] == 0 and ts["holdout_rows"] > 0
    # The reference profile: the contract's features and the champion's scores (a probability).
    from mlops_core.drift_profile import ReferenceProfile

    profile = ReferenceProfile.from_json(store.get_bytes(f"{key}/drift_profile.json"))
    contract = s.load_contract()
    assert set(profile.numeric) == set(contract.numeric_features) & set(contract.feature_columns)
    assert set(profile.categorical) == set(contract.categorical_features) & set(contract.feature_columns)
    assert profile.rows == ts["train_rows"] and profile.prediction is not None
    assert profile.prediction.edges[0] >= 0.0 and profile.prediction.edges[-1] <= 1.0
    spec = train.training_job_spec(s, ts, "layout-check", store)
    assert spec.inputs == {
        "train": store.uri(f"{key}/train") + "/",
        "test": store.uri(f"{key}/test") + "/",
        "contract": store.uri(f"{key}/contract") + "/",
    }
    assert "contract" not in spec.hyperparameters
    holdout = train.read_training_frame(store, {"key": key}, "holdout")  # what evaluate and deploy ask for
    assert len(holdout) == ts["holdout_rows"] and holdout["_event_time"].min().isoformat() == ts["holdout_start"]

    # With training.validation_days, the days before the holdout become the validation channel.
    plain = train.build_training_set(s, "ts-plain", backends_for(s))
    with_validation = s.model_copy(update={"training": s.training.model_copy(update={"validation_days": 1})})
    split = train.build_training_set(with_validation, "ts-validation", backends_for(with_validation))
    assert split["validation_rows"] > 0 and split["holdout_rows"] == plain["holdout_rows"]
    assert split["train_rows"] + split["validation_rows"] == plain["train_rows"]
    parts = {part: train.read_training_frame(store, split, part) for part in ("train", "validation", "test")}
    assert parts["validation"]["_event_time"].min() > parts["train"]["_event_time"].max()
    assert parts["validation"]["_event_time"].max() < parts["test"]["_event_time"].min()
    assert set(train.training_job_spec(with_validation, split, "v", store).inputs) == {
        "train",
        "validation",
        "test",
        "contract",
    }


def test_quarantine_has_reasons(lifecycle):
    from mlops_core.backends import object_store
    from mlops_core.datasets import DatasetStore

    s = lifecycle["settings"]
    records = DatasetStore(object_store(s), "churn").list_quarantine()
    text = json.dumps(records)
    assert "missing_columns" in text and "usage_hours" in text
    assert "plan" in text  # the unknown plan value


def test_registry_mirror_follows_registration_and_the_gate(lifecycle):
    """Every registered version reaches the mirror once with its lineage; a champion is approved there."""
    from mlops_core.approvals import rejection_reason

    s, mirror = lifecycle["settings"], lifecycle["mirror"]
    metric = s.evaluation.primary_metric
    evaluations = [c["evaluation"] for c in (lifecycle["initial"], lifecycle["drift"])]
    promoted = lifecycle["promoted"]
    expected = []
    for ev in evaluations:
        expected.append(("mirror", ev["model_name"], ev["version"]))
        if ev["promote"]:
            expected.append(("approve", ev["model_name"], ev["version"], None))
        else:  # the DAG's reject_in_mirror task records the gate's verdict (see test_registry_mirror_operator.py)
            assert rejection_reason(ev, None) == "promotion gate: " + "; ".join(ev["reasons"])
        assert ev["mirror_ref"] == f"mirror://{ev['model_name']}/{ev['version']}"
        sent = mirror.versions[(ev["model_name"], ev["version"])]
        assert sent.model_uri == f"models:/{ev['model_name']}/{ev['version']}" and len(sent.model_sha256) == 64
        assert sent.metrics[metric] == pytest.approx(ev["challenger_metrics"][metric])
        assert sent.lineage["mlops.run_id"] == ev["mlflow_run_id"]
        assert {"mlops.dataset_versions", "mlops.git_commit", "mlops.training_set"} <= set(sent.lineage)
    expected += [
        ("mirror", promoted["model_name"], promoted["version"]),
        ("approve", promoted["model_name"], promoted["version"], None),
    ]
    assert mirror.calls == expected
    copy = mirror.versions[(promoted["model_name"], promoted["version"])]
    assert copy.lineage["mlops.promoted_from"].startswith(f"{s.registered_model_name}/")
    assert promoted["mirror_ref"] == f"mirror://{promoted['model_name']}/{promoted['version']}"


def test_calm_day_does_not_retrain(lifecycle):
    calm = lifecycle["calm"]
    assert calm["verdict"]["retrain"] is False, calm["verdict"]
    assert "training_set" not in calm


def test_the_monitor_reports_live_decay_serving_health_and_staleness(lifecycle):
    live = lifecycle["calm"]["verdict"]["live"]
    # no delayed labels were dropped: no pairs, no live verdict, and it says why
    assert live["decay"]["pairs"] == 0 and live["decay"]["decayed"] is False
    assert live["decay"]["metric"] == "roc_auc" and live["decay"]["baseline"] is not None
    assert live["decay"]["labels"]["files_read"] == 0
    assert set(live["serving_health"]) >= {"healthy", "requests", "error_rate", "p95_latency_ms"}
    # staleness is measured from the newest version's run date (the calm cycle's ingested_at)
    assert live["staleness"]["dataset"]["newest"].startswith("2026-01-05")
    assert "live roc_auc on delayed labels:" in lifecycle["calm"]["verdict"]["summary"]


def test_concept_drift_triggers_retraining_through_decay(lifecycle):
    drift = lifecycle["drift"]
    assert drift["verdict"]["retrain"] is True
    # Evidently sees no input drift; the champion's quality on the new labelled rows collapsed.
    assert drift["verdict"]["reason"] == "decay", drift["verdict"]
    assert drift["verdict"]["drift_share"] < 0.3
    assert drift["verdict"]["metric_drop"] > 0.05
    assert drift["verdict"]["report"].endswith(".html")
    assert drift["ingest"]["version_id"] in drift["candidate"]["dataset_versions"]


def test_the_same_evidence_requests_retraining_once(lifecycle):
    """Another monitor run on the same drifted versions and champion does not ask again (a cron
    tick while the retrained challenger was rejected); a retry of the requesting run still asks."""
    drift = lifecycle["drift"]
    again, retried = drift["again"], drift["retried"]
    assert again["retrain"] is False and again["reason"] == "already_requested", again
    assert "already requested" in again["summary"] and "by monitor-drift at" in again["summary"]
    assert retried["retrain"] is True and retried["reason"] == drift["verdict"]["reason"]


def test_champion_has_lineage_tags(lifecycle):
    from mlops_core.backends import model_registry

    s = lifecycle["settings"]
    champ = model_registry(s).champion(s.registered_model_name)
    assert champ is not None
    assert champ.tags["mlops.training_set"].startswith("training_sets/")
    assert champ.tags["mlops.dataset_versions"]
    assert champ.tags["mlops.git_commit"]


def test_retried_training_job_reattaches(lifecycle):
    assert lifecycle["rerun_job"]["reattached"] is True
    assert lifecycle["rerun_job"]["metrics"] == lifecycle["initial"]["job"]["metrics"]


def test_promotion_to_staging_serves_there(lifecycle):
    promoted, dep = lifecycle["promoted"], lifecycle["staging_deploy"]
    assert promoted["env"] == "staging" and promoted["model_name"] == "staging.churn"
    assert dep["version"] == promoted["version"] and dep["env"] == "staging"


APPROVE = {"chosen_options": ["Approve"], "responded_by_user": {"id": "7", "name": "alice"}}
REJECT = {"chosen_options": ["Reject"], "responded_by_user": {"id": "7", "name": "alice"}}


def test_prod_champion_moves_only_with_an_approval(lifecycle):
    """prod requires approval: without one, with a rejection, or with a forged answer nothing moves."""
    from mlops_core.backends import backends_for, model_registry
    from mlops_core.errors import ApprovalRequired
    from mlops_core.settings import load_settings
    from mlops_core.stages import promote

    prod = load_settings("prod")
    registry = model_registry(prod)
    plan = promote.plan_promotion("staging", None, backends_for)
    target = backends_for(prod)
    assert plan["requires_approval"] is True and plan["target_champion_version"] is None
    assert plan["source_metric"]  # the approver sees the candidate's held-out score
    for answer in (None, REJECT, {"chosen_options": ["Approve"]}, {**plan, "requires_approval": False}):
        with pytest.raises(ApprovalRequired, match="prod requires a human approval"):
            promote.copy_champion(plan, target, approval=answer)
    with pytest.raises(ApprovalRequired):  # a plan that claims no approval is needed changes nothing
        promote.copy_champion({**plan, "requires_approval": False}, target)
    assert registry.champion(prod.registered_model_name) is None

    promoted = promote.copy_champion(plan, target, approval=APPROVE)
    champion = registry.champion(prod.registered_model_name)
    assert champion is not None and champion.version == promoted["version"]
    assert champion.tags["mlops.approved_by"] == "alice (7)"


def test_evaluate_register_cannot_move_a_champion_that_needs_approval(lifecycle):
    """A dev run offered to prod is refused; a passing evaluation in prod waits for the approval."""
    from mlops_core.backends import backends_for, model_registry
    from mlops_core.errors import ApprovalRequired
    from mlops_core.settings import load_settings
    from mlops_core.stages import evaluate

    prod = load_settings("prod")
    before = model_registry(prod).champion(prod.registered_model_name)
    with pytest.raises(evaluate.CandidateFromAnotherEnvironment, match="trained in dev, not prod"):
        evaluate.evaluate_candidate(prod, lifecycle["initial"]["candidate"], backends_for(prod))
    passing = {**lifecycle["initial"]["evaluation"], "model_name": prod.registered_model_name, "promote": True}
    with pytest.raises(ApprovalRequired):
        evaluate.promote_to_champion(prod, passing, backends_for(prod))
    with pytest.raises(ApprovalRequired):
        evaluate.promote_to_champion(prod, passing, backends_for(prod), approval=REJECT)
    after = model_registry(prod).champion(prod.registered_model_name)
    assert (before and before.version) == (after and after.version)


def test_failed_smoke_test_rolls_back_to_the_previous_champion(lifecycle, monkeypatch):
    """Fault injection: the smoke test of the newly deployed version fails; everything else is real."""
    from mlops_core.backends import backends_for, local_model_server, model_registry
    from mlops_core.serving import LocalModelServer, SmokeTestFailed
    from mlops_core.stages.deploy import DeploymentFailed, deploy_champion

    s = lifecycle["settings"]
    registry = model_registry(s)
    name = s.registered_model_name
    live = registry.champion(name).version
    # Every challenger is registered, promoted or not: two versions exist.
    registered = {lifecycle["initial"]["evaluation"]["version"], lifecycle["drift"]["evaluation"]["version"]}
    bad = next(v for v in sorted(registered, key=int) if v != live)
    registry.set_champion(name, bad, previous=live)

    real_smoke = LocalModelServer.smoke_test

    def smoke(self, rows, *args, **kwargs):
        if self.current() and str(self.current()["model_version"]) == str(bad):
            raise SmokeTestFailed(f"injected: version {bad} answers garbage")
        return real_smoke(self, rows, *args, **kwargs)

    monkeypatch.setattr(LocalModelServer, "smoke_test", smoke)
    with pytest.raises(DeploymentFailed, match=f"rolled back to version {live}"):
        deploy_champion(s, bad, backends_for(s))
    assert registry.champion(name).version == live
    current = local_model_server(s).current()
    assert current["alive"] and str(current["model_version"]) == str(live)


def test_a_tampered_champion_is_refused_by_monitor_evaluate_and_deploy(lifecycle, tmp_path):
    """The champion's MLmodel is switched to pickle with a payload in the artifact store; nothing runs it."""
    from mlops_core.backends import backends_for, local_model_server, model_registry
    from mlops_core.model_integrity import MODEL_SHA256_TAG, ModelIntegrityError
    from mlops_core.stages import evaluate, monitor
    from mlops_core.stages.deploy import DeploymentFailed, deploy_champion
    from tests.model_tampering import artifact_folder, restored_afterwards, tamper_to_pickle

    s = lifecycle["settings"]
    registry = model_registry(s)
    name = s.registered_model_name
    live = registry.champion(name).version
    cycles = [lifecycle["initial"], lifecycle["drift"]]
    target = next(c["evaluation"]["version"] for c in cycles if c["evaluation"]["version"] != live)
    untouched = next(c["candidate"] for c in cycles if c["evaluation"]["version"] == live)
    live_pid = local_model_server(s).current()["pid"]
    expected = registry.version_info(name, target).tags.get(MODEL_SHA256_TAG)
    refused = f"{name} version {target}: .*expected sha256 {expected}, found [0-9a-f]{{64}}"
    canary = tmp_path / "canary"
    with restored_afterwards(artifact_folder(registry, name, target)) as folder:
        tamper_to_pickle(folder, canary)
        registry.set_champion(name, target, previous=live)
        try:
            with pytest.raises(ModelIntegrityError, match=refused):
                monitor.check_for_retraining(
                    s, [lifecycle["drift"]["ingest"]["version_id"]], backends_for(s), run_key="tampered"
                )
            with pytest.raises(ModelIntegrityError, match=refused):
                evaluate.evaluate_candidate(
                    s, untouched, backends_for(s)
                )  # the champion is scored next to the challenger
            with pytest.raises(
                DeploymentFailed, match=f"ModelIntegrityError: {refused}.*rolled back to version {live}"
            ):
                deploy_champion(s, target, backends_for(s))
        finally:
            if registry.champion(name).version != live:
                registry.set_champion(name, live)
    assert not canary.exists()
    assert registry.champion(name).version == live
    current = local_model_server(s).current()
    assert current["alive"] and current["pid"] == live_pid  # the live server was never stopped


def test_promotion_carries_the_held_out_rows_to_a_separate_store(lifecycle, tmp_path):
    """Environments with stores of their own (an S3 prefix each): the target's deploy smoke-tests on them."""
    from mlops_core.backends import object_store
    from mlops_core.stages import train
    from mlops_core.storage import LocalObjectStore

    source = object_store(lifecycle["settings"])
    key = lifecycle["initial"]["training_set"]["key"]
    target = LocalObjectStore(tmp_path / "staging-store")
    assert train.carry_held_out_rows(source, target, key) == f"{key}/test/part-0.parquet"
    assert target.list_keys() == [f"{key}/test/part-0.parquet"]  # the held-out rows only, nothing else
    assert train.read_training_frame(target, {"key": key}, "holdout").equals(
        train.read_training_frame(source, {"key": key}, "holdout")
    )
    assert train.carry_held_out_rows(source, target, key) is None  # a retry: already there
    assert train.carry_held_out_rows(source, source, key) is None  # one store for both environments
