"""The Airflow UI plugin: "Empirical tests" on a task instance, and a project page (docs/ui-plugin.md)."""
