#!/usr/bin/env bash
# Run the whole test suite (unit + end-to-end) against several Airflow versions.
#
#   scripts/test-matrix.sh                 # 2.11.2 3.1.8 3.3.2
#   scripts/test-matrix.sh 2.11.2          # just one
#   PYTEST_ARGS="-x -k hook" scripts/test-matrix.sh
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
[ ${#VERSIONS[@]} -gt 0 ] || VERSIONS=(2.11.2 3.1.8 3.3.2)
MATRIX_DIR=$ROOT/.venv-matrix
LOG_DIR=$MATRIX_DIR/logs
mkdir -p "$LOG_DIR"
# shellcheck disable=SC2206
PYTEST_ARGS=(${PYTEST_ARGS:-})
# what an install depends on: the dependencies, and where the editable install points
INSTALL_SUM=$( { cat pyproject.toml; echo "$ROOT"; } | cksum | cut -d' ' -f1)

summary=()
failed=0

venv_for() {  # echo the venv to use for $1, building it when needed; progress to stderr
    local v=$1 venv=$MATRIX_DIR/$1
    # the main venv, when the Makefile's stamp says it is up to date with pyproject.toml
    if [ "$v" = "$MAIN_VERSION" ] && [ "$ROOT/.venv/.installed-$v" -nt pyproject.toml ] \
        && "$ROOT/.venv/bin/python" -c "import airflow, sys; sys.exit(airflow.__version__ != '$v')" 2>/dev/null; then
        echo "$ROOT/.venv"; return 0
    fi
    local stamp=$venv/.matrix-installed-$v-$INSTALL_SUM
    if [ -f "$stamp" ] && [ -x "$venv/bin/python" ]; then
        echo "$venv"; return 0
    fi
    local log=$LOG_DIR/$v-install.log
    echo "[$v] building $venv (log: ${log#"$ROOT"/})" >&2
    if ! {
        { [ -x "$venv/bin/python" ] || "$PYTHON" -m venv "$venv"; } &&
        "$venv/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip &&
        "$venv/bin/python" -m pip install -q --disable-pip-version-check "apache-airflow==$v" \
            -e ".[test]" --config-settings editable_mode=compat
    } >"$log" 2>&1; then
        tail -n 30 "$log" >&2
        return 1
    fi
    rm -f "$venv"/.matrix-installed-*
    touch "$stamp"
    echo "$venv"
}

for v in "${VERSIONS[@]}"; do
    start=$SECONDS
    log=$LOG_DIR/$v.log
    if ! venv=$(venv_for "$v"); then
        summary+=("matrix: Airflow $v  FAILED  venv build failed  ($((SECONDS - start))s)")
        failed=1
        continue
    fi
    built=$((SECONDS - start))
    echo "[$v] pytest in $venv (log: ${log#"$ROOT"/})"
    "$venv/bin/python" -m pytest -q "${PYTEST_ARGS[@]}" >"$log" 2>&1
    rc=$?
    # pytest's closing line, with or without its ===== frame (-q drops it)
    counts=$(grep -E '^(=+ )?[0-9]+ (passed|failed|errors?|skipped|deselected).* in [0-9.]+s|no tests ran' "$log" \
        | tail -1 | sed -E 's/^=+ //; s/ =+$//')
    [ -n "$counts" ] || counts="pytest exit $rc, no summary line (see $log)"
    if [ $rc -eq 0 ]; then
        status=ok
    else
        status=FAILED
        failed=1
        grep -E '^(FAILED|ERROR) ' "$log" || tail -n 30 "$log"
    fi
    summary+=("matrix: Airflow $v  $status  $counts  (venv ${built}s, total $((SECONDS - start))s)")
done

echo
printf '%s\n' "${summary[@]}"
exit $failed
