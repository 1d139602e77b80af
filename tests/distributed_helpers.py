"""A distributed Airflow 3.3 deployment on one machine, for the distributed tier (tests/distributed).

What production looks like once users outgrow one machine, as local processes: CeleryExecutor
with a Redis broker and a PostgreSQL metadata database (both private instances on free loopback
ports, from Debian's packages, see scripts/install-services.sh), an API server, a scheduler, a
dag-processor, two Celery workers and two triggerers. Built on tests/deployment_helpers.py
(`Deployment`'s REST client and environment, `EmulatorProcess`), which it imports, not copies.

- Every Airflow process shares one Fernet key (trigger kwargs are encrypted: a triggerer that
  cannot decrypt cannot adopt) and one JWT secret (the execution API's task tokens).
- Each process plays a machine of its own: `[core] hostname_callable` returns its name
  (worker1, triggerer2, ...), so the REST API says which worker runs a task and which
  triggerer holds a trigger. Celery workers get distinct `--celery-hostname`s; log servers are
  skipped (they bind to all interfaces and would collide on one host).
- PostgreSQL runs as the `postgres` user, started directly (not through pg_ctl) so the harness
  owns its PID; its data lives in a world-traversable temp dir, owned by `postgres`.
- Every process starts a session of its own. Airflow puts each task process in a process
  group of its own, so "the machine died" (`kill`) and "the machine froze" (`freeze`) signal
  the whole session; `stop` does the same on every path (SIGCONT first: a frozen process ignores
  SIGTERM), so nothing is left running.

Manual use::

    .venv-distributed/bin/python -m tests.distributed_helpers   # start it all, print URLs, Ctrl-C stops
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from tests.deployment_helpers import Deployment, _spawn, free_port, tail, wait_until

ROOT = Path(__file__).resolve().parent.parent
TIER_DIR = ROOT / "tests" / "distributed"
WORKERS = ("worker1", "worker2")
TRIGGERERS = ("triggerer1", "triggerer2")
COMPONENTS = ("api-server", "scheduler", "dag-processor", *TRIGGERERS, *WORKERS)
WORKER_CONCURRENCY = 8
# scenario -> its figures (tasks right / total, runs per task instance, cancels, lags...), filled by
# tests/distributed/test_distributed.py and printed by tests/distributed/conftest.py
REPORT: dict[str, dict[str, Any]] = {}


# -- sessions: a process and everything it started, whatever process group they moved to --


def session_pids(sid: int) -> list[int]:
    """Every live process of session `sid` (from /proc: field 6 of /proc/<pid>/stat)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[-1].split()
        if len(fields) > 3 and int(fields[3]) == sid and fields[0] != "Z":
            found.append(int(entry.name))
    return found


def signal_session(sid: int, sig: int) -> int:
    """Send `sig` to every process of session `sid`; how many got it."""
    sent = 0
    for pid in session_pids(sid):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)
            sent += 1
    return sent


def stop_sessions(processes: Iterable[subprocess.Popen[bytes]], grace: float = 15.0) -> None:
    """SIGCONT + SIGTERM to each leader's group, wait up to `grace` s, then SIGKILL each whole session."""
    processes = [p for p in processes if p is not None]
    for process in processes:
        signal_session(process.pid, signal.SIGCONT)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    for process in processes:
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=max(0.1, deadline - time.monotonic()))
    for process in processes:
        for _ in range(3):
            if not signal_session(process.pid, signal.SIGKILL):
                break
            time.sleep(0.2)
        if process.poll() is None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=5)


# -- PostgreSQL and Redis, private instances --


def postgres_bin() -> Path:
    """The newest Debian PostgreSQL server's bin directory (scripts/install-services.sh installs one)."""
    found = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/postgres"), key=lambda p: int(p.parts[-3].split(".")[0])
    )
    if found:
        return found[-1].parent
    on_path = shutil.which("postgres")
    if on_path:
        return Path(on_path).resolve().parent
    raise FileNotFoundError("no PostgreSQL server: run scripts/install-services.sh")


class PostgresProcess:
    """`postgres` as the `postgres` user on a free loopback port, in a throwaway directory."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="empirical-tier-pg-"))
        self.dir.chmod(0o755)  # the postgres user must traverse it
        self.log = self.dir / "postgres.log"
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"postgresql+psycopg2://airflow@127.0.0.1:{self.port}/airflow"

    def _as_postgres(self) -> dict[str, Any]:
        user = pwd.getpwnam("postgres")
        return {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": [], "cwd": self.dir}

    def start(self) -> PostgresProcess:
        binaries = postgres_bin()
        data, sockets = self.dir / "data", self.dir / "sockets"
        user = pwd.getpwnam("postgres")
        for folder in (data, sockets):
            folder.mkdir()
            os.chown(folder, user.pw_uid, user.pw_gid)
        env = {"PATH": os.environ.get("PATH", ""), "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8"}
        initdb = subprocess.run(
            [binaries / "initdb", "-D", data, "-U", "airflow", "--auth=trust", "-E", "UTF8", "--no-sync"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            **self._as_postgres(),
        )
        if initdb.returncode != 0:
            raise RuntimeError(f"initdb failed:\n{initdb.stdout}\n{initdb.stderr}")
        self.port = free_port()
        settings = {
            "listen_addresses": "127.0.0.1",
            "unix_socket_directories": str(sockets),
            "max_connections": "300",  # two workers of 8 slots, their result backends, 2 triggerers...
            "fsync": "off",  # a throwaway database: no durability, less I/O
            "synchronous_commit": "off",
            "full_page_writes": "off",
        }
        argv: list[str | Path] = [binaries / "postgres", "-D", data, "-p", str(self.port)]
        for key, value in settings.items():
            argv += ["-c", f"{key}={value}"]
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                argv,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                **self._as_postgres(),
            )

        def ready() -> bool:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"postgres exited with {self.process.returncode}:\n{tail(self.log)}")
            probe = [binaries / "pg_isready", "-h", "127.0.0.1", "-p", str(self.port), "-U", "airflow"]
            return subprocess.run(probe, capture_output=True, check=False, timeout=10).returncode == 0

        wait_until("postgres to accept connections", ready, 60, 0.2)
        created = subprocess.run(
            [binaries / "createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", "airflow", "airflow"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if created.returncode != 0:
            raise RuntimeError(f"createdb failed: {created.stderr}")
        return self

    def stop(self) -> None:
        """Fast shutdown (SIGINT: disconnect clients, then stop), SIGKILL what lingers; remove the data."""
        process, self.process = self.process, None
        if process is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, signal.SIGINT)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=20)
            stop_sessions([process], grace=1)
        shutil.rmtree(self.dir, ignore_errors=True)


class RedisProcess:
    """`redis-server` on a free loopback port, no persistence, in a throwaway directory."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="empirical-tier-redis-"))
        self.log = self.dir / "redis.log"
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisProcess:
        binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        if not Path(binary).exists():
            raise FileNotFoundError("no redis-server: run scripts/install-services.sh")
        self.port = free_port()
        argv = [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        argv += ["--dir", str(self.dir), "--daemonize", "no", "--protected-mode", "yes"]
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
            )

        def pong() -> bool:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.process.returncode}:\n{tail(self.log)}")
            with socket.create_connection(("127.0.0.1", self.port), timeout=2) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(64).startswith(b"+PONG")

        wait_until("redis to answer PING", pong, 30, 0.1)
        return self

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is not None:
            stop_sessions([process], grace=10)
        shutil.rmtree(self.dir, ignore_errors=True)


# -- Airflow --


class DistributedDeployment(Deployment):
    """Airflow 3.3 with CeleryExecutor, PostgreSQL and Redis: 2 Celery workers, 2 triggerers."""

    COMPONENTS = COMPONENTS
    START_TIMEOUT = 180.0
    MIGRATE_TIMEOUT = 600.0

    def __init__(
        self,
        home: Path,
        emulator_url: str,
        *,
        postgres_url: str,
        redis_url: str,
        dags: Iterable[Path],
        extra_env: dict[str, str] | None = None,
    ) -> None:
        super().__init__(home, emulator_url, dags=dags)
        from cryptography.fernet import Fernet

        result_backend = "db+" + postgres_url  # the driver named: SQLAlchemy 2.1 defaults to psycopg 3
        python_path = os.pathsep.join(p for p in (str(TIER_DIR), os.environ.get("PYTHONPATH", "")) if p)
        self.env.update(
            {
                "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": postgres_url,
                "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
                "AIRFLOW__CORE__PARALLELISM": "32",
                # one key in every process: trigger kwargs are encrypted with it
                "AIRFLOW__CORE__FERNET_KEY": Fernet.generate_key().decode(),
                "AIRFLOW__CORE__HOSTNAME_CALLABLE": "empirical_tier_hostname.hostname",
                "PYTHONPATH": python_path,
                "AIRFLOW__CELERY__BROKER_URL": redis_url,
                "AIRFLOW__CELERY__RESULT_BACKEND": result_backend,
                "AIRFLOW__CELERY__WORKER_CONCURRENCY": str(WORKER_CONCURRENCY),
                # a dead worker's task is failed (and retried) 20 s after its last heartbeat, not 300 s
                "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "20",
                "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": "5",
                **(extra_env or {}),
            }
        )
        self.ended: dict[str, subprocess.Popen[bytes]] = {}  # killed on purpose; reaped in stop()
        self.log_offsets: dict[str, int] = {}  # where each component's log was when it last started

    def argv(self, name: str) -> list[str]:
        if name in WORKERS:
            return [
                self.airflow,
                "celery",
                "worker",
                "--celery-hostname",
                f"{name}@tier",
                "--concurrency",
                str(WORKER_CONCURRENCY),
                "--skip-serve-logs",
            ]
        if name.startswith("triggerer"):
            return [self.airflow, "triggerer", "--skip-serve-logs"]
        return [self.airflow, name]

    def start_component(self, name: str) -> subprocess.Popen[bytes]:
        if name in self.processes:
            raise RuntimeError(f"{name} is already running")
        env = {**self.env, "EMPIRICAL_TIER_HOSTNAME": name}
        log = self.home / f"{name}.log"
        self.log_offsets[name] = log.stat().st_size if log.exists() else 0
        process = _spawn(self.argv(name), env, self.home, self.home / f"{name}.log")
        self.processes[name] = process
        return process

    def tune_database(self) -> None:
        """PostgreSQL needs no tuning (the base class puts SQLite in WAL mode)."""

    def wait_for_components(self, timeout: float = 180.0) -> dict[str, Any]:
        """The scheduler, both triggerers and both Celery workers registered and healthy."""

        def ready() -> dict[str, Any] | None:
            self.check_alive()
            jobs = self.api("GET", "/jobs?job_state=running&is_alive=true&limit=100")["jobs"]
            triggerers = {j["hostname"] for j in jobs if j["job_type"] == "TriggererJob"}
            schedulers = {j["hostname"] for j in jobs if j["job_type"] == "SchedulerJob"}
            workers = self.celery_workers()
            if set(TRIGGERERS) <= triggerers and schedulers and set(WORKERS) <= workers:
                return {"triggerers": sorted(triggerers), "workers": sorted(workers)}
            return None

        return dict(wait_until("scheduler, triggerers and Celery workers up", ready, timeout, 1.0))

    def celery_workers(self) -> set[str]:
        """The running Celery workers that said they are ready (in their log, since their last start)."""
        ready = set()
        for name in WORKERS:
            if name not in self.processes:
                continue
            log = self.home / f"{name}.log"
            with contextlib.suppress(OSError), log.open("rb") as handle:
                handle.seek(self.log_offsets.get(name, 0))
                if f"{name}@tier ready".encode() in handle.read():
                    ready.add(name)
        return ready

    # -- the failures the tier inflicts --

    def kill(self, name: str) -> float:
        """The machine died: SIGKILL every process of the component's session. Returns when (epoch s)."""
        process = self.processes.pop(name)
        self.ended[f"{name}#{process.pid}"] = process
        when = time.time()
        signal_session(process.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=10)
        return when

    def freeze(self, name: str) -> float:
        """The machine froze (a long GC pause, a suspended VM): SIGSTOP its whole session."""
        signal_session(self.processes[name].pid, signal.SIGSTOP)
        return time.time()

    def thaw(self, name: str) -> float:
        signal_session(self.processes[name].pid, signal.SIGCONT)
        return time.time()

    def stop(self) -> None:
        # everything but the API server first (they may report to it while stopping), then it
        others = [p for n, p in self.processes.items() if n != "api-server"]
        stop_sessions([*others, *self.ended.values()])
        stop_sessions([p for n, p in self.processes.items() if n == "api-server"])
        self.processes.clear()
        self.ended.clear()


def main() -> int:  # pragma: no cover - manual use
    from tests.deployment_helpers import EmulatorProcess

    workdir = Path(tempfile.mkdtemp(prefix="empirical-distributed-"))
    postgres, redis = PostgresProcess(), RedisProcess()
    emulator = EmulatorProcess(workdir)
    deployment: DistributedDeployment | None = None
    try:
        postgres.start()
        redis.start()
        emulator.start()
        dags = sorted((TIER_DIR / "dags").glob("*.py"))
        deployment = DistributedDeployment(
            workdir / "airflow", emulator.url, postgres_url=postgres.url, redis_url=redis.url, dags=dags
        )
        deployment.start()
        print(f"Airflow: {deployment.url}  emulator: {emulator.url}  home: {workdir}", flush=True)
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        return 0
    finally:
        if deployment is not None:
            deployment.stop()
        emulator.stop()
        redis.stop()
        postgres.stop()
        print(f"stopped; logs kept in {workdir}", file=sys.stderr)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
