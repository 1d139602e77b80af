"""Apache Airflow provider for Empirical (empirical.run): trigger Playwright test runs and wait for them.

Kept import-free so that Airflow's provider discovery and DAG parsing stay cheap.
"""

__version__ = "0.1.0"
