"""Provider metadata read by Airflow's providers manager.

Import-free on purpose: Airflow calls this in every process it starts. The connection form
is declared here (`conn-fields`, `ui-field-behaviour`: what the Airflow 3.2+ UI reads) and
the hook derives its legacy form methods (Airflow 2.11 / 3.0 / 3.1) from the same dicts.
"""

from __future__ import annotations

from typing import Any

INTEGRATION = "Empirical"
API_URL = "https://api.empirical.run"
DASHBOARD_URL = "https://dash.empirical.run"
HOW_TO_GUIDES = [
    "/docs/operators.md",
    "/docs/sensor-and-trigger.md",
    "/docs/stopping-and-rerunning.md",
    "/docs/event-driven.md",  # EmpiricalTestRunEndedTrigger: DAGs scheduled by runs that end anywhere
    "/docs/triage.md",
]

CONN_FIELDS: dict[str, dict[str, Any]] = {
    "project_id": {
        "label": "Project ID",
        "description": "Empirical project to act on, sent as the x-project-id header. "
        "Leave empty when the API key is bound to one project.",
        "schema": {"type": ["integer", "null"], "minimum": 1},
    },
    "timeout": {
        "label": "Timeout (seconds)",
        "description": "Timeout of each HTTP request to the Empirical API.",
        "schema": {"type": ["number", "null"], "minimum": 1, "default": 30},
    },
    "dashboard_url": {
        "label": "Dashboard URL",
        "description": f"Base of the links to test runs (default {DASHBOARD_URL}).",
        "schema": {"type": ["string", "null"], "format": "url"},
    },
    "project_slug": {
        "label": "Project slug",
        "description": "The project's slug in dashboard links (<dashboard>/<slug>/test-runs/<id>). "
        "Leave empty to learn it from the API.",
        "schema": {"type": ["string", "null"]},
    },
    "ca_bundle": {
        "label": "CA bundle",
        "description": "Path of a PEM file of CA certificates to trust (a private CA or a TLS-inspecting "
        "proxy), on every worker and triggerer. Default: the system's.",
        "schema": {"type": ["string", "null"]},
    },
}

UI_FIELD_BEHAVIOUR: dict[str, Any] = {
    "hidden-fields": ["login", "schema", "port", "extra"],
    "relabeling": {"password": "API key", "host": "API URL"},
    "placeholders": {
        "password": "API key from the Empirical dashboard",
        "host": API_URL,
        "project_id": "e.g. 42 (optional)",
        "timeout": "30",
        "dashboard_url": DASHBOARD_URL,
        "project_slug": "e.g. acme (optional)",
        "ca_bundle": "/etc/ssl/certs/my-ca.pem (optional)",
    },
}


def get_provider_info() -> dict[str, Any]:
    return {
        "package-name": "airflow-provider-empirical",
        "name": "Empirical",
        "description": "Trigger [Empirical](https://empirical.run) Playwright test runs and wait for them.",
        "integrations": [
            {
                "integration-name": INTEGRATION,
                "external-doc-url": "https://docs.empirical.run",
                # one guide per operator, as the official providers list theirs (paths in this repo)
                "how-to-guide": HOW_TO_GUIDES,
                "tags": ["software"],
            }
        ],
        "operators": [
            {
                "integration-name": INTEGRATION,
                "python-modules": ["airflow_provider_empirical.operators.empirical"],
            }
        ],
        "sensors": [
            {
                "integration-name": INTEGRATION,
                "python-modules": ["airflow_provider_empirical.sensors.empirical"],
            }
        ],
        "hooks": [
            {
                "integration-name": INTEGRATION,
                "python-modules": ["airflow_provider_empirical.hooks.empirical"],
            }
        ],
        "triggers": [
            {
                "integration-name": INTEGRATION,
                "python-modules": ["airflow_provider_empirical.triggers.empirical"],
            }
        ],
        "connection-types": [
            {
                "connection-type": "empirical",
                "hook-class-name": "airflow_provider_empirical.hooks.empirical.EmpiricalHook",
                "hook-name": "Empirical",
                "conn-fields": CONN_FIELDS,
                "ui-field-behaviour": UI_FIELD_BEHAVIOUR,
            }
        ],
        "extra-links": ["airflow_provider_empirical.links.EmpiricalTestRunLink"],
    }
