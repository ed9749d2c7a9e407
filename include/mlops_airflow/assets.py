"""The assets that join the lifecycle's DAGs: defined once here, imported everywhere.

Every event carries metadata (``extra``) so the consumer knows exactly what it got:

==================  ====================  ========================================================
asset               produced by           ``extra`` keys
==================  ====================  ========================================================
LANDED_FILES        watch_drop_zone       directory, files (path, name, size, mtime of each)
DATASET             ingest, ingest_sql    dataset, version_id, rows, rejected_rows, sources,
                                          event_time_min, event_time_max
FEATURES            features              dataset, version_ids, offline_rows, online_entities
RETRAIN_REQUESTED   monitor               reason (no_champion | drift | decay | forced),
                                          version_ids, drift_share, metric_drop
MODEL_CANDIDATE     train                 env, mlflow_run_id, training_set, metrics,
                                          dataset_versions
CHAMPION            evaluate_register,    env, model_name, version, previous_version,
                    promote               mlflow_run_id
DEPLOYMENT          deploy                env, model_name, version, url, rolled_back
==================  ====================  ========================================================

The ``x-mlops`` URI scheme is a private scheme (Airflow leaves ``x-`` schemes alone).
"""

from __future__ import annotations

from airflow.sdk import Asset

LANDED_FILES = Asset(name="landed_files", uri="x-mlops://drop-zone/landed", group="mlops")
DATASET = Asset(name="dataset_version", uri="x-mlops://datasets/versions", group="mlops")
FEATURES = Asset(name="feature_snapshot", uri="x-mlops://features/snapshot", group="mlops")
RETRAIN_REQUESTED = Asset(name="retrain_requested", uri="x-mlops://monitoring/retrain", group="mlops")
MODEL_CANDIDATE = Asset(name="model_candidate", uri="x-mlops://models/candidate", group="mlops")
CHAMPION = Asset(name="champion_model", uri="x-mlops://models/champion", group="mlops")
DEPLOYMENT = Asset(name="deployment", uri="x-mlops://serving/deployment", group="mlops")

ALL_ASSETS = (LANDED_FILES, DATASET, FEATURES, RETRAIN_REQUESTED, MODEL_CANDIDATE, CHAMPION, DEPLOYMENT)
