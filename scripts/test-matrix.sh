#!/usr/bin/env bash
# Run the whole test suite (unit + end-to-end) against several Airflow versions.
#
#   scripts/test-matrix.sh                 # 2.11.2 3.1.8 3.3.2 openlineage
#   scripts/test-matrix.sh 2.11.2          # just one
#   scripts/test-matrix.sh openlineage     # Airflow 3.3.2 + apache-airflow-providers-openlineage
#   PYTEST_ARGS="-x -k hook" scripts/test-matrix.sh
#
# `openlineage` is Airflow 3.3.2 (MAIN_VERSION) with the optional OpenLineage provider in its own venv
# (never in .venv: the provider is no dependency, and the main suite must pass without it). It runs
# tests/e2e/test_openlineage.py only; OPENLINEAGE_TESTS=tests runs the whole suite there.
#
# Each version gets a venv at .venv-matrix/<version>, built once and reused
# while pyproject.toml and the checkout's path are unchanged (a stamp file records that).
# Editable installs in compat mode (a plain path entry), as the Makefile does.
# 3.3.2 reuses the main .venv when that one already has it (what `make test` builds).
# Prints one summary line per version and exits non-zero if any version failed.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

PYTHON=${PYTHON:-$(command -v python3.11 || command -v python3)}
MAIN_VERSION=3.3.2
VERSIONS=("$@")
[ ${#VERSIONS[@]} -gt 0 ] || VERSIONS=(2.11.2 3.1.8 3.3.2 openlineage)
MATRIX_DIR=$ROOT/.venv-matrix
LOG_DIR=$MATRIX_DIR/logs
mkdir -p "$LOG_DIR"
# shellcheck disable=SC2206
PYTEST_ARGS=(${PYTEST_ARGS:-})
# what an install depends on: the dependencies, and where the editable install points
INSTALL_SUM=$( { cat pyproject.toml; echo "$ROOT"; } | cksum | cut -d' ' -f1)

summary=()
failed=0

airflow_of() {  # the Airflow version of a matrix entry
    case $1 in openlineage) echo "$MAIN_VERSION" ;; *) echo "$1" ;; esac
}
packages_of() {  # what an entry installs besides Airflow and this project
    case $1 in openlineage) echo apache-airflow-providers-openlineage ;; esac
}
label_of() {
    case $1 in openlineage) echo "Airflow $MAIN_VERSION + OpenLineage" ;; *) echo "Airflow $1" ;; esac
}
targets_of() {  # pytest's paths for an entry (none: the configured testpaths)
    case $1 in openlineage) echo "${OPENLINEAGE_TESTS:-tests/e2e/test_openlineage.py}" ;; esac
}

venv_for() {  # echo the venv to use for $1, building it when needed; progress to stderr
    local v=$1 venv=$MATRIX_DIR/$1
    # the main venv, when the Makefile's stamp says it is up to date with pyproject.toml
    if [ "$v" = "$MAIN_VERSION" ] && [ "$ROOT/.venv/.installed-$v" -nt pyproject.toml ] \
        && "$ROOT/.venv/bin/python" -c "import airflow, sys; sys.exit(airflow.__version__ != '$v')" 2>/dev/null; then
        echo "$ROOT/.venv"; return 0
    fi
    local stamp=$venv/.matrix-installed-$v-$INSTALL_SUM
    local extra
    # shellcheck disable=SC2207
    extra=($(packages_of "$v"))
    if [ -f "$stamp" ] && [ -x "$venv/bin/python" ]; then
        echo "$venv"; return 0
    fi
    local log=$LOG_DIR/$v-install.log
    echo "[$v] building $venv (log: ${log#"$ROOT"/})" >&2
    if ! {
        { [ -x "$venv/bin/python" ] || "$PYTHON" -m venv "$venv"; } &&
        "$venv/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip &&
        "$venv/bin/python" -m pip install -q --disable-pip-version-check "apache-airflow==$(airflow_of "$v")" \
            "${extra[@]}" -e ".[test]" --config-settings editable_mode=compat
    } >"$log" 2>&1; then
        tail -n 30 "$log" >&2
        return 1
    fi
    rm -f "$venv"/.matrix-installed-*
    # the install's metadata lives in the venv; a second copy in the source tree (on sys.path) makes
    # Airflow find the plugin twice, and then the OpenLineage listener emits no task events
    rm -rf "$ROOT"/airflow_provider_empirical.egg-info
    touch "$stamp"
    echo "$venv"
}

for v in "${VERSIONS[@]}"; do
    start=$SECONDS
    log=$LOG_DIR/$v.log
    if ! venv=$(venv_for "$v"); then
        summary+=("matrix: $(label_of "$v")  FAILED  venv build failed  ($((SECONDS - start))s)")
        failed=1
        continue
    fi
    built=$((SECONDS - start))
    echo "[$v] pytest in $venv (log: ${log#"$ROOT"/})"
    # shellcheck disable=SC2207
    targets=($(targets_of "$v"))
    : >"$log"
    if [ ${#targets[@]} -gt 0 ]; then
        "$venv/bin/python" -m pytest -q "${PYTEST_ARGS[@]}" "${targets[@]}" >>"$log" 2>&1
        rc=$?
    else  # as `make test` does: unit and integration four at a time, then the DAG runs
        "$venv/bin/python" -m pytest -q -n 4 "${PYTEST_ARGS[@]}" tests/unit tests/integration >>"$log" 2>&1
        rc=$?
        # Before 3.3 the real-Airflow tiers (deployment, browser) skip, and each process has its own
        # Airflow home: the DAG runs go two at a time (14 min -> 8 on 2 cores for 3.1.8)
        e2e_workers=()
        [ "$(airflow_of "$v")" = "$MAIN_VERSION" ] || e2e_workers=(-n 2)
        "$venv/bin/python" -m pytest -q "${e2e_workers[@]}" "${PYTEST_ARGS[@]}" tests/e2e >>"$log" 2>&1 || rc=$?
    fi
    # pytest's closing lines, with or without their ===== frame (-q drops it)
    counts=$(grep -E '^(=+ )?[0-9]+ (passed|failed|errors?|skipped|deselected).* in [0-9.]+s|no tests ran' "$log" \
        | sed -E 's/^=+ //; s/ =+$//' | paste -sd ';' -)
    [ -n "$counts" ] || counts="pytest exit $rc, no summary line (see $log)"
    if [ $rc -eq 0 ]; then
        status=ok
    else
        status=FAILED
        failed=1
        grep -E '^(FAILED|ERROR) ' "$log" || tail -n 30 "$log"
    fi
    summary+=("matrix: $(label_of "$v")  $status  $counts  (venv ${built}s, total $((SECONDS - start))s)")
done

echo
printf '%s\n' "${summary[@]}"
exit $failed
