"""
### Train: a challenger from a point-in-time-correct training set

Triggered by **retrain_requested** (from monitor) or manually. Builds the training set from the
feature store (the last `training.window_days` days, features joined as of each label's event
time, the last `training.holdout_days` days held out), runs the training entrypoint as a job
on the environment's compute service (`backends.compute`, same `/opt/ml` contract locally, on
SageMaker and on Azure ML; the task defers while the job runs), and logs params, metrics, the model
(skops, read back from object storage) and the dataset lineage to MLflow. Emits **model_candidate**.
Names derive from the run, so retries re-attach instead of duplicating.
"""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import Param, dag, task

from mlops_airflow.assets import MODEL_CANDIDATE, RETRAIN_REQUESTED
from mlops_airflow.dag_defaults import DEFAULT_ARGS, START_DATE, env_param, on_failed_run, use_the_settings
from mlops_airflow.links import MlflowRunLink, with_links
from mlops_airflow.operators.training import TrainingJobOperator


@dag(
    schedule=[RETRAIN_REQUESTED],
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,
    doc_md=__doc__,
    description="Train a challenger on a point-in-time-correct training set and log it to MLflow.",
    default_args=DEFAULT_ARGS,
    tags=["mlops", "training"],
    params={
        "env": env_param(),
        "algorithm": Param(
            None,
            type=["null", "string"],
            enum=[None, "hist_gradient_boosting", "random_forest", "logistic_regression", "ridge"],
            values_display=use_the_settings("training.algorithm"),
            title="Algorithm",
            description="Override training.algorithm for this run (empty: use the settings).",
        ),
        "window_days": Param(
            None,
            type=["null", "integer"],
            minimum=1,
            maximum=3650,
            title="Training window (days)",
            description="Override training.window_days for this run (empty: use the settings).",
        ),
        "compute_backend": Param(
            None,
            type=["null", "string"],
            enum=[None, "local", "aws", "azure"],
            values_display=use_the_settings("backends.compute"),
            title="Compute backend",
            description="Override backends.compute for this run (empty: use the settings).",
        ),
    },
    on_failure_callback=on_failed_run,
)
def train():
    def _settings(context):
        """The run's settings with its Param overrides (an algorithm starts from its own defaults)."""
        from mlops_airflow.runtime import settings_for
        from mlops_core.settings import with_algorithm

        params = context["params"]
        window = {"window_days": int(params["window_days"])} if params.get("window_days") else {}
        compute = {"compute": params["compute_backend"]} if params.get("compute_backend") else {}
        return with_algorithm(settings_for(context, training=window, backends=compute), params.get("algorithm"))

    @task(execution_timeout=timedelta(minutes=30))
    def training_set(**context) -> dict:
        from mlops_airflow.backends import backends_for
        from mlops_airflow.runtime import fail_fast, run_key
        from mlops_core.stages.train import build_training_set

        with fail_fast():
            settings = _settings(context)
            # The set depends on the window and the contract: a retry after either changed builds anew.
            spec = {
                "window_days": settings.training.window_days,
                "holdout_days": settings.training.holdout_days,
                "ttl_days": settings.features.ttl_days,
                "contract": settings.load_contract().fingerprint,
            }
            return build_training_set(settings, run_key(context, "ts", spec=spec), backends_for(settings))

    ts = training_set()
    job = TrainingJobOperator(
        task_id="train_model",
        training_set=ts,
        algorithm="{{ params.algorithm or '' }}",
        compute_backend="{{ params.compute_backend or '' }}",
    )

    @task(outlets=[MODEL_CANDIDATE], execution_timeout=timedelta(minutes=20))
    def log_to_mlflow(training_set: dict, job: dict, **context) -> dict:
        from mlops_airflow.backends import backends_for
        from mlops_airflow.run_notes import record_note
        from mlops_airflow.runtime import fail_fast
        from mlops_core.stages.train import log_candidate

        with fail_fast():
            settings = _settings(context)
            # The MLflow run is keyed by the job: a retry finds the run it already logged.
            candidate = log_candidate(settings, training_set, job, job["job_name"], backends_for(settings))
        metrics = ", ".join(f"{k}={v:.3f}" for k, v in sorted(candidate["metrics"].items()) if isinstance(v, float))
        record_note(context, f"trained {job['job_name']} -> MLflow run {candidate['mlflow_run_id']} ({metrics})")
        context["outlet_events"][MODEL_CANDIDATE].extra = candidate
        return candidate

    with_links(log_to_mlflow(ts, job.output), MlflowRunLink())


train()
