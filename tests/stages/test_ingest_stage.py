"""The ingest stage on a real drop zone: duplicates are quarantined, re-runs change nothing."""

from __future__ import annotations

import json
import shutil

from mlops_core.backends import backends_for, object_store
from mlops_core.datasets import DatasetStore
from mlops_core.demo_data import write_day_files
from mlops_core.settings import load_settings
from mlops_core.stages.ingest import ingest_files


def _setup(mlops_home):
    settings = load_settings("dev")
    drop = settings.dataset.drop_zone
    drop.mkdir(parents=True)
    return settings, drop, DatasetStore(object_store(settings), "churn")


def test_row_repeated_across_files_of_one_batch_is_quarantined_once(mlops_home):
    settings, drop, store = _setup(mlops_home)
    day0 = write_day_files(drop, [0], rows=50)[0]
    lines = day0.read_text().splitlines()
    (drop / "resend_part.csv").write_text("\n".join([lines[0], lines[1], lines[2]]) + "\n")  # 2 rows again
    report = ingest_files(
        settings,
        sorted(str(p) for p in drop.iterdir()),
        backends_for(settings),
        run_id="r1",
        ingested_at="2026-01-02T00:00:00+00:00",
    )
    assert report["rows"] == 50 and report["duplicate_rows"] == 2
    keys = store.read_version(report["version_id"], columns=["_row_key"])["_row_key"]
    assert keys.is_unique
    records = json.dumps(store.list_quarantine("r1"))
    assert "duplicate" in records


def test_rerun_and_redelivery_create_nothing_new(mlops_home):
    settings, drop, store = _setup(mlops_home)
    files = [str(p) for p in write_day_files(drop, [0, 1], rows=40)]
    first = ingest_files(settings, files, backends_for(settings), run_id="r1", ingested_at="2026-01-03T00:00:00+00:00")
    assert first["created"] and first["rows"] == 80
    assert not any(drop.iterdir()), "consumed files move to the archive"

    # Re-running the same run: the files are archived, nothing is read, nothing is written.
    again = ingest_files(settings, files, backends_for(settings), run_id="r1", ingested_at="2026-01-03T00:00:00+00:00")
    assert again["version_id"] is None

    # The same bytes delivered again under another name: recognised, quarantined, not counted.
    archived = next((drop.parent / f"{drop.name}.archive").rglob("*.csv"))
    shutil.copyfile(archived, drop / "resent.csv")
    redelivered = ingest_files(
        settings,
        [str(drop / "resent.csv")],
        backends_for(settings),
        run_id="r2",
        ingested_at="2026-01-04T00:00:00+00:00",
    )
    assert redelivered["version_id"] is None
    assert redelivered["files"][0]["status"] == "duplicate_file"
    assert [m["row_count"] for m in store.list_versions()] == [80]
