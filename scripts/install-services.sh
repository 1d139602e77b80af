#!/usr/bin/env bash
# Install the two services the distributed test tier runs (make test-distributed): Debian's
# PostgreSQL server and Redis server. Only the binaries are used: the test harness starts private
# instances on free loopback ports, as the `postgres` user, in throwaway directories, and stops
# them when the session ends. The system services are never used, and are not started here.
# Idempotent: does nothing when both binaries are already installed.
set -euo pipefail

find_postgres() {
    # newest Debian cluster binary (postgresql-15 on bookworm), else one on PATH
    local found
    found="$(ls -d /usr/lib/postgresql/*/bin/postgres 2>/dev/null | sort -V | tail -n 1 || true)"
    if [ -z "$found" ]; then
        found="$(command -v postgres || true)"
    fi
    echo "$found"
}

if [ -n "$(find_postgres)" ] && command -v redis-server >/dev/null 2>&1 && id postgres >/dev/null 2>&1; then
    echo "postgres already installed: $("$(find_postgres)" --version)"
    echo "redis-server already installed: $(redis-server --version | head -n 1)"
    exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi

# Packages must not start their system services (the tier never uses them): the usual
# policy-rc.d "101: action forbidden", only for this install and only when none exists.
POLICY=/usr/sbin/policy-rc.d
OWN_POLICY=""
if [ ! -e "$POLICY" ]; then
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$POLICY" >/dev/null
    $SUDO chmod 755 "$POLICY"
    OWN_POLICY=1
fi
cleanup() {
    if [ -n "$OWN_POLICY" ]; then
        $SUDO rm -f "$POLICY"
    fi
}
trap cleanup EXIT

export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
$SUDO apt-get install -y -q --no-install-recommends postgresql redis-server
echo "postgres: $("$(find_postgres)" --version)"
echo "redis-server: $(redis-server --version | head -n 1)"
