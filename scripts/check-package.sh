#!/usr/bin/env bash
# Build the wheel and sdist, check them with twine, and prove the wheel installs and imports
# in a fresh venv that has only Airflow (no editable checkout, no test tools).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
AIRFLOW_VERSION=${AIRFLOW_VERSION:-3.3.2}
rm -rf dist build
$PY -m build -q --outdir dist . >/dev/null
$PY -m twine check --strict dist/*
wheel=$(ls dist/*.whl)
$PY - "$wheel" <<'PYEOF'
import sys, zipfile
names = zipfile.ZipFile(sys.argv[1]).namelist()
assert "airflow_provider_empirical/py.typed" in names, "py.typed missing"
assert any(n.startswith("airflow_provider_empirical/emulator/") for n in names), "emulator missing"
assert not any(n.startswith(("tests/", "example_dags/", "bench/", "scripts/")) for n in names), names
print(f"wheel contents ok: {len(names)} files")
PYEOF
venv=$(mktemp -d)/venv
trap 'rm -rf "$(dirname "$venv")"' EXIT
python3 -m venv "$venv"
"$venv/bin/pip" install -q "apache-airflow==$AIRFLOW_VERSION" "$wheel" 2>&1 | grep -v "WARNING: Location" || true
cd "$(dirname "$venv")"
AIRFLOW_HOME="$(dirname "$venv")/home" "$venv/bin/python" - <<'PYEOF'
from importlib import metadata
import airflow_provider_empirical as pkg
from airflow_provider_empirical.operators.empirical import EmpiricalTriggerTestRunOperator
from airflow_provider_empirical.sensors.empirical import EmpiricalTestRunSensor
from airflow_provider_empirical.triggers.empirical import EmpiricalTestRunTrigger
from airflow.providers_manager import ProvidersManager
assert metadata.version("airflow-provider-empirical") == pkg.__version__
assert "airflow-provider-empirical" in ProvidersManager().providers
print(f"installed wheel {pkg.__version__} imports and registers with Airflow")
PYEOF
