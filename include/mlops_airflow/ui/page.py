"""The HTML of the lifecycle view: one Jinja template, every value escaped (``autoescape``), no JavaScript.

Stable for people and for the browser test: the page's content is ``<main id="lifecycle">``, each
environment a ``<section id="env-<env>">`` headed ``<h2><model> in <env></h2>``, each monitor
verdict's report a link whose text is ``drift report``.
"""

from __future__ import annotations

from functools import cache
from typing import Any

TEMPLATE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>MLOps lifecycle</title>
<style>
 body { font-family: system-ui, sans-serif; margin: 1rem 1.5rem; color: #1a202c; }
 section.env { border: 1px solid #cbd5e0; border-radius: 6px; padding: 0.5rem 1rem; margin-bottom: 1.2rem; }
 h2 { margin: 0.3rem 0; } h3 { margin: 0.8rem 0 0.3rem; font-size: 1rem; }
 table { border-collapse: collapse; } td, th { border: 1px solid #e2e8f0; padding: 2px 8px; text-align: left; }
 .muted { color: #718096; } .ok { color: #276749; font-weight: 600; } .bad { color: #c53030; font-weight: 600; }
 .errors { color: #c53030; }
</style>
</head>
<body>
<main id="lifecycle">
<h1>MLOps lifecycle</h1>
<p class="muted">Read at {{ data.generated_at }} from MLflow, the dataset manifests, the serving targets and
Airflow's asset events. <a href="?format=json">JSON</a></p>
{% if data.approvals %}
<h2 id="pending-approvals">Pending approvals ({{ data.approvals|length }})</h2>
<ul>{% for a in data.approvals %}
 <li>{{ a.subject }} <span class="muted">({{ a.env or "environment unknown" }}; {{ a.dag_id }} / {{ a.run_id }},
 waiting since {{ a.created_at }})</span> &mdash; answer it under <a href="/required_actions">Required actions</a></li>
{% endfor %}</ul>
{% endif %}
{% for v in data.environments %}
<section class="env" id="env-{{ v.env }}" data-env="{{ v.env }}">
<h2>{{ v.model_name or "(settings not readable)" }} in {{ v.env }}</h2>
{% if v.backends %}<p class="muted">backends: storage {{ v.backends.storage }}, compute {{ v.backends.compute }},
serving {{ v.backends.serving }}, registry mirror {{ v.backends.registry_mirror }};
{{ "a human approves every new champion" if v.requires_approval else "no approval required" }}</p>{% endif %}

{% if "champion" in v %}
<h3>Champion</h3>
{% if v.champion %}{{ version(v.champion) }}{% else %}<p class="muted">no champion yet</p>{% endif %}

<h3>Last challenger</h3>
{% if v.challenger %}{{ version(v.challenger) }}{% else %}<p class="muted">no version registered yet</p>{% endif %}

<h3>Last evaluation</h3>
{% if v.evaluation %}{% set e = v.evaluation %}
<p>version {{ e.version }}: <span class="{{ 'ok' if e.promote else 'bad' }}">
 {{- "passed the gate" if e.promote else "not promoted" }}</span>
 against champion {{ ("v" ~ e.champion_version) if e.champion_version else "(none)" }}
 <span class="muted">at {{ e.at }}</span></p>
{% if e.reasons %}<ul>{% for r in e.reasons %}<li>{{ r }}</li>{% endfor %}</ul>{% endif %}
<table><tr><th>metric (same held-out rows)</th><th>challenger v{{ e.version }}</th><th>champion</th></tr>
{% for m, value in e.challenger_metrics.items() %}
<tr><td>{{ m }}</td><td>{{ num(value) }}</td><td>{{ num(e.champion_metrics.get(m)) }}</td></tr>{% endfor %}
</table>
{% else %}<p class="muted">no evaluation yet</p>{% endif %}

<h3>Monitoring</h3>
{% if v.monitor %}{% set m = v.monitor %}
<p class="monitor-verdict">last check {{ m.at }} (champion v{{ m.champion_version }}):
 drift <span class="{{ 'bad' if m.drifted else 'ok' }}">{{ "detected" if m.drifted else "none" }}</span>
 (share of drifted columns {{ num(m.drift_share) }}),
 decay <span class="{{ 'bad' if m.decayed else 'ok' }}">
 {{- "detected" if m.decayed else ("none" if m.decayed is not none else "not recorded") }}</span>
 (metric drop {{ num(m.metric_drop) }}); verdict: <b>{{ m.verdict or "none" }}</b>
 {% if m.report_id %}&mdash;
 <a class="drift-report" href="{{ base }}reports/{{ m.report_id }}">drift report</a>{% endif %}</p>
{% if m.summary %}<p class="muted">{{ m.summary }}</p>{% endif %}
{% else %}<p class="muted">no monitor run yet</p>{% endif %}
{% if v.retrain_request %}{% set r = v.retrain_request %}
<p>last retraining request: <b>{{ r.reason }}</b> at {{ r.at }}{% if web_link(r.report) %} &mdash;
 <a class="drift-report" href="{{ web_link(r.report) }}">drift report</a>{% endif %}</p>{% endif %}

<h3>Deployment</h3>
{% if v.deployment %}{% set d = v.deployment %}
<p>v{{ d.model_version }} live on {{ d.target }} at <code>{{ d.endpoint }}</code> since {{ d.deployed_at }}:
 <span class="health {{ 'ok' if d.healthy else 'bad' }}">{{ "healthy" if d.healthy else "not answering" }}</span></p>
{% else %}<p class="muted">nothing deployed</p>{% endif %}
{% if v.last_deployment %}{% set d = v.last_deployment %}
<p class="muted">last deploy run: v{{ d.version }} at {{ d.url }}{{ " (rolled back)" if d.rolled_back }}
 on {{ d.at }}</p>{% endif %}

<h3>Data</h3>
{% if v.dataset %}<p>newest dataset version <code>{{ v.dataset.version_id }}</code>: {{ v.dataset.rows }} rows,
 committed {{ v.dataset.created_at }}</p>{% else %}<p class="muted">no dataset version yet</p>{% endif %}

<h3>Pending approvals</h3>
{% if v.approvals %}<ul>{% for a in v.approvals %}
 <li>{{ a.subject }} ({{ a.dag_id }} / {{ a.run_id }})</li>{% endfor %}</ul>
{% else %}<p class="muted">none</p>{% endif %}
{% endif %}

{% if v.errors %}<div class="errors"><h3>Could not read</h3><ul>
{% for part, why in v.errors.items() %}<li>{{ part }}: {{ why }}</li>{% endfor %}</ul></div>{% endif %}
</section>
{% endfor %}
</main>
</body>
</html>
"""

VERSION = """{% macro version(x) %}
<p>v{{ x.version }}{{ " (the champion)" if x.is_champion }}{% if x.decision %}, gate: {{ x.decision }}{% endif %}
{% if x.approved_by %}, approved by {{ x.approved_by }}{% endif %}
{% if x.promoted_from %}, promoted from {{ x.promoted_from }}{% endif %}
{% if x.dataset_versions %}; trained on {% for d in x.dataset_versions %}<code>{{ d }}</code> {% endfor %}{% endif %}
{% if x.run_id %}<span class="muted">(MLflow run {{ x.run_id }})</span>{% endif %}</p>
{% if x.metrics or x.holdout %}<table><tr><th>metric</th><th>value</th></tr>
{% for m, value in x.holdout.items() %}<tr><td>held-out {{ m }}</td><td>{{ num(value) }}</td></tr>{% endfor %}
{% for m, value in x.metrics.items() %}<tr><td>{{ m }}</td><td>{{ num(value) }}</td></tr>{% endfor %}
</table>{% endif %}
{% endmacro %}"""

LOGIN_HINT = """<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Log in to Airflow</title></head>
<body><main id="login-required"><h1>Log in to Airflow first</h1>
<p>This page is part of the Airflow UI ({{ status }}: {{ detail }}). <a href="/">Log in</a>, then open it again.</p>
</main></body></html>"""


def _num(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def _web_link(url: Any) -> str | None:
    """``url`` when it is an http(s) link (event contents are not trusted: never a ``javascript:`` href)."""
    from mlops_core.alerts import safe_link

    link = safe_link(url)
    return link if link and link.lower().startswith(("http://", "https://")) else None


@cache
def _environment() -> Any:
    import jinja2

    env = jinja2.Environment(autoescape=True, undefined=jinja2.ChainableUndefined)
    env.globals["num"] = _num
    env.globals["web_link"] = _web_link
    macros = env.from_string(VERSION).module
    env.globals["version"] = macros.version  # type: ignore[attr-defined]
    return env


def render_lifecycle(data: dict[str, Any], base: str = "") -> str:
    """The lifecycle page; ``base`` prefixes the report links (relative to ``/mlops/lifecycle`` by default)."""
    return str(_environment().from_string(TEMPLATE).render(data=data, base=base))


def render_login_hint(status: int, detail: str) -> str:
    return str(_environment().from_string(LOGIN_HINT).render(status=status, detail=detail))
