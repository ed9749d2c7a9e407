"""The CI/CD files of a fork (GitHub Actions, Azure Pipelines, AWS CodeBuild), parsed and run.

Each must run ``make test`` on every change and ship ``dags/``, ``include/`` and ``plugins/`` only
on a push to main, after the tests. Every ``make`` target they name exists. The ship command each
one names is then run for real, as its CI would run it (``bash -c``, from the repository root),
against a local folder and against the session's moto server (S3 on loopback; no real network);
a second run uploads nothing, and a file removed from the repository is removed from the
destination. ``mlops_demo.ship`` itself (unchanged files, deletions limited to the three folders,
what is never shipped) is checked on a small tree.
"""

from __future__ import annotations

import os
import re
import subprocess
import uuid
from pathlib import Path

import pytest
import yaml

from mlops_demo.ship import FolderDestination, S3Destination, ship, shipped_files

REPO = Path(__file__).resolve().parents[2]
GITHUB = yaml.safe_load((REPO / ".github" / "workflows" / "ci.yml").read_text(encoding="utf-8"))
AZURE = yaml.safe_load((REPO / "azure-pipelines.yml").read_text(encoding="utf-8"))
CODEBUILD = yaml.safe_load((REPO / "buildspec.yml").read_text(encoding="utf-8"))
# How each file names the destination in its ship command
DESTINATION_VARIABLE = {
    "github": "${{ vars.SHIP_DESTINATION }}",
    "azure": "$(SHIP_DESTINATION)",
    "codebuild": "$SHIP_DESTINATION",
}


def _github_steps(job: str) -> list[dict]:
    return GITHUB["jobs"][job]["steps"]


def _azure_stage(name: str) -> dict:
    return next(stage for stage in AZURE["stages"] if stage["stage"] == name)


def _azure_ship_steps() -> list[dict]:
    deployment = _azure_stage("ship")["jobs"][0]
    return deployment["strategy"]["runOnce"]["deploy"]["steps"]


def _ship_commands() -> dict[str, str]:
    github = next(s["run"] for s in _github_steps("ship") if "make ship" in s.get("run", ""))
    azure = next(s["script"] for s in _azure_ship_steps() if "make ship" in s.get("script", ""))
    codebuild = CODEBUILD["phases"]["post_build"]["commands"][0]
    return {"github": github, "azure": azure, "codebuild": codebuild}


def _all_commands() -> list[str]:
    commands = [s["run"] for job in GITHUB["jobs"] for s in _github_steps(job) if "run" in s]
    commands += [s["script"] for s in AZURE["stages"][0]["jobs"][0]["steps"] if "script" in s]
    commands += [s["script"] for s in _azure_ship_steps() if "script" in s]
    commands += [c for phase in CODEBUILD["phases"].values() for c in phase.get("commands", [])]
    return commands


def _makefile_targets() -> set[str]:
    text = (REPO / "Makefile").read_text(encoding="utf-8")
    return set(re.findall(r"^([A-Za-z][\w-]*):", text, re.M))


# -- trigger rules ------------------------------------------------------------------------------------


def test_github_tests_every_change_and_ships_pushes_to_main_after_the_tests():
    triggers = GITHUB.get("on", GITHUB.get(True))  # YAML 1.1 reads a bare `on` as True
    assert set(triggers) == {"push", "pull_request"} and triggers["push"] is None  # every branch
    assert [s["run"] for s in _github_steps("test") if "run" in s] == ["make test"]
    assert GITHUB["jobs"]["test"]["env"]["CI"] == "true"
    ship_job = GITHUB["jobs"]["ship"]
    assert ship_job["needs"] == "test"
    assert ship_job["if"] == "github.event_name == 'push' && github.ref == 'refs/heads/main'"


def test_azure_tests_every_change_and_ships_pushes_to_main_after_the_tests():
    assert AZURE["trigger"]["branches"]["include"] == ["*"] and AZURE["pr"]["branches"]["include"] == ["*"]
    assert AZURE["variables"]["CI"] == "true"
    test_steps = _azure_stage("test")["jobs"][0]["steps"]
    assert [s["script"] for s in test_steps if "script" in s] == ["make test"]
    stage = _azure_stage("ship")
    assert stage["dependsOn"] == "test"
    condition = stage["condition"].replace(" ", "")
    assert condition.startswith("and(succeeded(),")
    assert "eq(variables['Build.SourceBranch'],'refs/heads/main')" in condition
    assert "ne(variables['Build.Reason'],'PullRequest')" in condition


def test_codebuild_tests_every_build_and_ships_only_a_push_to_main():
    assert CODEBUILD["version"] == 0.2 and CODEBUILD["env"]["variables"]["CI"] == "true"
    assert CODEBUILD["phases"]["build"]["commands"] == ["make test"]


def test_every_make_target_they_name_exists():
    targets = _makefile_targets()
    named = {t for command in _all_commands() for t in re.findall(r"\bmake (\w[\w-]*)", command)}
    assert named == {"test", "ship"}
    assert named <= targets


# -- the ship commands, run ---------------------------------------------------------------------------


def _run(command: str, destination: str, variable: str, env: dict[str, str] | None = None) -> str:
    result = subprocess.run(
        ["bash", "-c", command.replace(variable, destination)],
        cwd=REPO,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def _main_push(succeeded: bool = True) -> dict[str, str]:
    return {
        "CODEBUILD_BUILD_SUCCEEDING": "1" if succeeded else "0",
        "CODEBUILD_WEBHOOK_EVENT": "PUSH",
        "CODEBUILD_WEBHOOK_HEAD_REF": "refs/heads/main",
    }


@pytest.mark.parametrize("ci", ["github", "azure", "codebuild"])
def test_the_ship_command_copies_the_three_folders_to_a_folder(ci, tmp_path):
    command = _ship_commands()[ci]
    target = tmp_path / "environment"
    env = _main_push() if ci == "codebuild" else {}
    out = _run(command, str(target), DESTINATION_VARIABLE[ci], env)
    expected = shipped_files(REPO)
    assert f"{len(expected)} uploaded, 0 unchanged, 0 deleted" in out
    copied = {p.relative_to(target).as_posix() for p in target.rglob("*") if p.is_file()}
    assert copied == set(expected)
    assert all((target / key).read_bytes() == path.read_bytes() for key, path in expected.items())

    (target / "dags" / "removed_from_the_repo.py").write_text("dag = None\n")
    out = _run(command, str(target), DESTINATION_VARIABLE[ci], env)
    assert f"0 uploaded, {len(expected)} unchanged, 1 deleted" in out
    assert not (target / "dags" / "removed_from_the_repo.py").exists()


def test_codebuild_ships_nothing_for_a_pull_request_or_a_failed_build(tmp_path):
    command = _ship_commands()["codebuild"]
    target = tmp_path / "environment"
    pull_request = {**_main_push(), "CODEBUILD_WEBHOOK_EVENT": "PULL_REQUEST_UPDATED"}
    for env in (
        pull_request,
        _main_push(succeeded=False),
        {**_main_push(), "CODEBUILD_WEBHOOK_HEAD_REF": "refs/heads/x"},
    ):
        assert "nothing shipped" in _run(command, str(target), DESTINATION_VARIABLE["codebuild"], env)
    assert not target.exists()


@pytest.mark.parametrize("ci", ["github", "codebuild"])
def test_the_ship_command_syncs_an_s3_prefix_on_moto(ci, moto_server):
    s3 = moto_server.client("s3")
    bucket = f"ship-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="mwaa/requirements.txt", Body=b"kept: not one of the three folders")
    s3.put_object(Bucket=bucket, Key="mwaa/plugins/stale.py", Body=b"removed from the repository")
    aws = {
        "AWS_ENDPOINT_URL": moto_server.url,
        "AWS_ACCESS_KEY_ID": "AKIASHIPTESTKEY",
        "AWS_SECRET_ACCESS_KEY": "ship-test-secret",  # moto accepts any; never a real key
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    env = {**aws, **(_main_push() if ci == "codebuild" else {})}
    out = _run(_ship_commands()[ci], f"s3://{bucket}/mwaa", DESTINATION_VARIABLE[ci], env)
    expected = shipped_files(REPO)
    assert f"{len(expected)} uploaded, 0 unchanged, 1 deleted" in out
    keys = {o["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket) for o in page["Contents"]}
    assert keys == {f"mwaa/{k}" for k in expected} | {"mwaa/requirements.txt"}
    dag = next(k for k in expected if k.startswith("dags/"))
    assert s3.get_object(Bucket=bucket, Key=f"mwaa/{dag}")["Body"].read() == expected[dag].read_bytes()
    out = _run(_ship_commands()[ci], f"s3://{bucket}/mwaa", DESTINATION_VARIABLE[ci], env)
    assert f"0 uploaded, {len(expected)} unchanged, 0 deleted" in out


# -- mlops_demo.ship on a small tree --------------------------------------------------------------------


def _tree(root: Path) -> Path:
    for key, text in {
        "dags/train.py": "train",
        "dags/__pycache__/train.cpython-311.pyc": "bytecode",
        "include/pkg/core.py": "core",
        "include/airflow_mlops.egg-info/PKG-INFO": "metadata",
        "plugins/plugin.py": "plugin",
        "tests/test_x.py": "not shipped",
    }.items():
        (root / key).parent.mkdir(parents=True, exist_ok=True)
        (root / key).write_text(text)
    return root


def test_ship_uploads_changes_only_and_deletes_only_inside_the_three_folders(tmp_path):
    source = _tree(tmp_path / "repo")
    target = tmp_path / "env"
    (target / "logs").mkdir(parents=True)
    (target / "logs" / "keep.txt").write_text("not ours")
    first = ship(source, FolderDestination(target))
    assert sorted(first.uploaded) == ["dags/train.py", "include/pkg/core.py", "plugins/plugin.py"]

    (source / "dags" / "train.py").write_text("train v2")
    (source / "plugins" / "plugin.py").unlink()
    second = ship(source, FolderDestination(target))
    assert (second.uploaded, second.unchanged, second.deleted) == (("dags/train.py",), 1, ("plugins/plugin.py",))
    assert (target / "dags" / "train.py").read_text() == "train v2"
    assert (target / "logs" / "keep.txt").read_text() == "not ours"
    assert not (target / "tests").exists()


def test_ship_refuses_a_source_without_the_three_folders(tmp_path):
    with pytest.raises(FileNotFoundError, match="dags is missing"):
        ship(tmp_path, FolderDestination(tmp_path / "env"))


def test_s3_destination_keys_sit_under_the_prefix(moto_server):
    s3 = moto_server.client("s3")
    bucket = f"ship-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=bucket)
    destination = S3Destination(bucket, "env/prod", client=s3)
    destination.put("dags/a.py", b"a")
    assert destination.existing() == {"dags/a.py": "0cc175b9c0f1b6a831c399e269772661"}  # md5("a")
    destination.delete("dags/a.py")
    assert destination.existing() == {}
