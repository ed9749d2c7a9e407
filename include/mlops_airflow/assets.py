"""The assets that join the lifecycle's DAGs: defined once here, imported everywhere.

Every event carries metadata (``extra``) so the consumer knows exactly what it got:

==================  ====================  ========================================================
asset               produced by           ``extra`` keys
==================  ====================  ========================================================
LANDED_FILES        watch_drop_zone       directory, rule, files (path, name, size, mtime of each),
                                          announced, ignored (count per reason)
DATASET             ingest, ingest_sql    dataset, version_id, rows, rejected_rows, sources,
                                          event_time_min, event_time_max
QUARANTINE          ingest, ingest_sql    dataset, run_id, files_quarantined, rows_quarantined,
                                          reasons, records (quarantine keys), note
FEATURES            features              dataset, version_ids, offline_rows, online_entities
RETRAIN_REQUESTED   monitor               reason (no_champion | drift | decay | forced), env,
                                          version_ids, drift_share, drifted_columns,
                                          metric_drop, summary, report (the drift report in
                                          the UI: <base_url>mlops/reports/<env>/<run key>),
                                          report_uri (where it is stored), live
                                          (delayed-label decay, serving health)
MODEL_CANDIDATE     train                 env, mlflow_run_id, training_set, metrics,
                                          dataset_versions
EVALUATION          evaluate_register     env, model_name, version, promote, reasons,
                                          challenger_metrics, champion_metrics, champion_version
CHAMPION            evaluate_register,    env, model_name, version, previous_version,
                    promote               mlflow_run_id
DEPLOYMENT          deploy                env, model_name, version, url, rolled_back
==================  ====================  ========================================================

``INGEST_OUTCOME`` and ``MONITOR_OUTCOME`` are aliases: an ingest run adds a ``DATASET`` event only
when it committed a version and a ``QUARANTINE`` event only when it quarantined something; a monitor
run adds ``RETRAIN_REQUESTED`` only when it asks for retraining. Consumers are triggered exactly when
there is something for them, and one task does the work and the announcing.

The ``alerts`` DAG consumes ``QUARANTINE``, ``RETRAIN_REQUESTED``, ``EVALUATION`` and ``DEPLOYMENT``
and reads the same keys (``mlops_core.alerts`` decides which events call for an alert).

The ``x-mlops`` URI scheme is a private scheme (Airflow leaves ``x-`` schemes alone).
"""

from __future__ import annotations

from airflow.sdk import Asset, AssetAlias

LANDED_FILES = Asset(name="landed_files", uri="x-mlops://drop-zone/landed", group="mlops")
DATASET = Asset(name="dataset_version", uri="x-mlops://datasets/versions", group="mlops")
QUARANTINE = Asset(name="quarantine", uri="x-mlops://datasets/quarantine", group="mlops")
INGEST_OUTCOME = AssetAlias(name="ingest_outcome", group="mlops")
MONITOR_OUTCOME = AssetAlias(name="monitor_outcome", group="mlops")
FEATURES = Asset(name="feature_snapshot", uri="x-mlops://features/snapshot", group="mlops")
RETRAIN_REQUESTED = Asset(name="retrain_requested", uri="x-mlops://monitoring/retrain", group="mlops")
MODEL_CANDIDATE = Asset(name="model_candidate", uri="x-mlops://models/candidate", group="mlops")
EVALUATION = Asset(name="model_evaluation", uri="x-mlops://models/evaluation", group="mlops")
CHAMPION = Asset(name="champion_model", uri="x-mlops://models/champion", group="mlops")
DEPLOYMENT = Asset(name="deployment", uri="x-mlops://serving/deployment", group="mlops")

ALL_ASSETS = (
    LANDED_FILES,
    DATASET,
    QUARANTINE,
    FEATURES,
    RETRAIN_REQUESTED,
    MODEL_CANDIDATE,
    EVALUATION,
    CHAMPION,
    DEPLOYMENT,
)

# What each alias may resolve to: the DAG integrity test reads this to check that every asset a
# DAG waits for has a producer.
ALIAS_TARGETS = {
    INGEST_OUTCOME.name: (DATASET, QUARANTINE),
    MONITOR_OUTCOME.name: (RETRAIN_REQUESTED,),
}
