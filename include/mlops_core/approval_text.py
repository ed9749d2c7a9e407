"""What an approver reads before a model becomes champion: the body of the Airflow approval step.

Markdown, written for a person: what approving does, the candidate's held-out scores next to those
of the champion it would replace (with the change, and whether that is better), the data it was
trained on, and links to the training run and both model versions in the MLflow UI (when
``MLFLOW_UI_URL`` is set; without it the ids are printed so they can be looked up). Built at run
time from the plan or evaluation the previous task returned, never at DAG parse time.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from mlops_core.settings import METRIC_DIRECTIONS
from mlops_core.ui_links import mlflow_model_version_url, mlflow_run_url


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _fmt(value: Any) -> str:
    number = _number(value)
    return "-" if number is None else f"{number:.4f}"


def _change(name: str, mine: Any, theirs: Any, primary: str, greater_is_better: bool | None) -> str:
    a, b = _number(mine), _number(theirs)
    if a is None or b is None:
        return "-"
    delta = a - b
    higher_better = greater_is_better if name == primary and greater_is_better is not None else None
    if higher_better is None:
        higher_better = METRIC_DIRECTIONS.get(name)
    if abs(delta) < 5e-5 or higher_better is None:
        verdict = "same" if abs(delta) < 5e-5 else ""
    else:
        verdict = "better" if (delta > 0) == higher_better else "worse"
    return f"{delta:+.4f} {verdict}".rstrip()


def metrics_table(
    candidate: Mapping[str, Any],
    champion: Mapping[str, Any] | None,
    *,
    primary: str,
    greater_is_better: bool | None = None,
    candidate_label: str = "candidate",
    champion_label: str = "current champion",
) -> list[str]:
    """Markdown rows: each metric, the candidate's value, the champion's, the change (the gate's metric first)."""
    names = sorted(set(candidate) | set(champion or {}), key=lambda n: (n != primary, n))
    rows = [f"| metric | {candidate_label} | {champion_label} | change |", "|---|---:|---:|---|"]
    for name in names:
        mine, theirs = candidate.get(name), (champion or {}).get(name)
        label = f"**{name}** (gate)" if name == primary else name
        rows.append(
            f"| {label} | {_fmt(mine)} | {_fmt(theirs)} | {_change(name, mine, theirs, primary, greater_is_better)} |"
        )
    return rows


def _datasets(value: Any) -> str:
    if isinstance(value, str):
        value = [v for v in value.split(",") if v]
    if isinstance(value, Sequence) and not isinstance(value, str) and value:
        return ", ".join(f"`{v}`" for v in value)
    return "- (not recorded)"


def _code(value: Any) -> str:
    return f"`{value}`" if value else "-"


def _link(text: str, url: str | None, fallback: str) -> str:
    return f"[{text}]({url})" if url else fallback


def promotion_approval_text(plan: Mapping[str, Any], mlflow_ui: str | None = None) -> str:
    """The body of promote's approval: ``plan`` is ``stages.promote.plan_promotion``'s answer."""
    source, version, to_env = plan.get("source_model"), plan.get("source_version"), plan.get("to_env")
    target, champion_version = plan.get("target_model"), plan.get("target_champion_version")
    primary = str(plan.get("metric") or "")
    candidate = dict(plan.get("source_scores") or {})
    if primary and primary not in candidate and plan.get("source_metric") is not None:
        candidate[primary] = plan.get("source_metric")
    champion = plan.get("target_champion_scores")
    if champion_version and not champion and plan.get("target_champion_metric") is not None:
        champion = {primary: plan.get("target_champion_metric")}
    run_url = mlflow_run_url(mlflow_ui, plan.get("source_experiment_id"), plan.get("source_run_id"))
    lines = [
        f"### Promote {source} version {version} to {to_env}",
        "",
        (
            f"Approving copies **{source} version {version}** into **{target}**, makes it `@champion` of "
            f"{to_env} and the deploy DAG serves it there"
            + (f" in place of version {champion_version}." if champion_version else " (it has no champion yet).")
        ),
        "Rejecting changes nothing.",
        "",
        "**Scores on held-out rows** (each model on the days held out when it was registered):",
        "",
        *metrics_table(
            candidate,
            champion,
            primary=primary,
            greater_is_better=plan.get("greater_is_better"),
            candidate_label=f"candidate ({plan.get('from_env')} v{version})",
            champion_label=(f"{to_env} champion (v{champion_version})" if champion_version else f"{to_env} champion"),
        ),
        "",
        f"- **Trained on** dataset versions {_datasets(plan.get('source_dataset_versions'))}",
    ]
    if champion_version:
        lines.append(
            f"- **Current {to_env} champion** trained on {_datasets(plan.get('target_champion_dataset_versions'))}"
        )
    lines.append(f"- **Training run:** {_link('open in MLflow', run_url, _code(plan.get('source_run_id')))}")
    links = [
        _link(f"candidate {source} v{version}", mlflow_model_version_url(mlflow_ui, source, version), ""),
        _link(f"{target} v{champion_version}", mlflow_model_version_url(mlflow_ui, target, champion_version), ""),
    ]
    if any(links):
        lines.append("- **Model versions:** " + " · ".join(link for link in links if link))
    return "\n".join(lines)


def evaluation_approval_text(evaluation: Mapping[str, Any], mlflow_ui: str | None = None) -> str:
    """The body of evaluate_register's approval: ``evaluation`` is ``stages.evaluate.evaluate_candidate``'s."""
    name, version, env = evaluation.get("model_name"), evaluation.get("version"), evaluation.get("env")
    champion_version = evaluation.get("champion_version")
    reasons = " ".join(str(r) for r in evaluation.get("reasons") or [])
    run_url = mlflow_run_url(mlflow_ui, evaluation.get("mlflow_experiment_id"), evaluation.get("mlflow_run_id"))
    lines = [
        f"### Make {name} version {version} the champion of {env}",
        "",
        (
            f"**{name} version {version}** passed the promotion gate in **{env}**. Approving makes it `@champion` "
            "there and the deploy DAG serves it"
            + (f" in place of version {champion_version}." if champion_version else " (there is no champion yet).")
        ),
        "Rejecting keeps the current champion.",
        "",
        "**Scores on the same held-out rows:**",
        "",
        *metrics_table(
            evaluation.get("challenger_metrics") or {},
            evaluation.get("champion_metrics"),
            primary=str(evaluation.get("primary_metric") or ""),
            candidate_label=f"candidate (v{version})",
            champion_label=f"champion (v{champion_version})" if champion_version else "champion (none)",
        ),
        "",
        f"- **Gate:** {reasons or '-'}",
        f"- **Trained on** dataset versions {_datasets(evaluation.get('dataset_versions'))}",
        f"- **Training run:** {_link('open in MLflow', run_url, _code(evaluation.get('mlflow_run_id')))}",
    ]
    links = [
        _link(f"candidate v{version}", mlflow_model_version_url(mlflow_ui, name, version), ""),
        _link(f"champion v{champion_version}", mlflow_model_version_url(mlflow_ui, name, champion_version), ""),
    ]
    if any(links):
        lines.append("- **Model versions:** " + " · ".join(link for link in links if link))
    return "\n".join(lines)
