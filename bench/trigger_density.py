"""Figure 2: triggerer density. 1,000 waiting triggers in one asyncio event loop, ours vs dbt Cloud's.

Measured three times: over TLS with every status answer delayed 100 ms, as a remote API's round
trip would be (production-like; decides pass/miss with the targets of issue 14), over TLS with
no delay (loopback; the earlier figure, kept as it was) and over plain HTTP (reference). Three
processes per side and transport: this one (orchestrates), the
API server (`servers.py`, so its CPU is not counted) and the trigger process (`child` mode below),
which:

1. creates 1,000 runs that end at staggered times 10-20 s later (Empirical: through the
   emulator's control API and ``PUT /api/test-runs``; dbt: declared to the stub), then sets the
   server's response delay (0 or 100 ms) through its control route;
2. warms up with one trigger against an already finished run, so one-time costs (imports,
   provider discovery, first connection and TLS handshake) are not counted;
3. takes the baseline RSS, resets the peak RSS, starts the CPU clock, builds the 1,000
   triggers and drives each ``run()`` to its single event, noting when it came.

CPU per poll = process CPU of the trigger process / status polls the server counted in that
window. Memory per trigger = (peak RSS - baseline RSS) / 1,000. Lag = event time - run end.
Polls served / schedule = status polls the server counted / the polls the triggers' own loops
ask for: each trigger polls once per poll interval plus one round trip (it sleeps the interval
after each answer), so a trigger that waited W seconds is owed W / (POLL + delay) polls.

TLS: a throwaway self-signed certificate for 127.0.0.1 (openssl CLI); both servers serve https
with it and the trigger process gets ``SSL_CERT_FILE=<cert>``, which both aiohttp clients honour
(OpenSSL default paths), so both verify it as usual.

Plain HTTP: the dbt Cloud hook always builds ``https://{tenant}/api/v2/...``, so for this
transport only the child replaces the scheme with ``http`` (one wrapper around
``DbtCloudHook.get_request_url_params``).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import math
import subprocess
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from common import (
    API_KEY,
    Figure,
    Row,
    child_env,
    fmt,
    make_home,
    peak_rss_kb,
    percentile,
    reset_peak_rss,
    rss_kb,
    run_child,
    write_result,
)

N = 1000
POLL = 1.0
LEAD = 10.0  # first run ends this many seconds after creation
SPREAD = 10.0  # last run ends LEAD + SPREAD seconds after creation
RTT = 0.1  # the response delay of the round-trip setting (both servers)


# -- child: the trigger process ------------------------------------------------------------


def create_empirical_runs(url: str, n: int) -> tuple[int, dict[int, float]]:
    """One finished warm-up run, then n runs ending LEAD..LEAD+SPREAD s after creation."""
    import httpx

    scripts: list[dict[str, float]] = [{"queued_for": 0, "run_for": 0}]
    scripts += [{"queued_for": 0, "run_for": LEAD + SPREAD * i / n} for i in range(n)]
    ends: dict[int, float] = {}
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=30) as client:
        client.post("/_emulator/runs/queue", json=scripts).raise_for_status()
        for script in scripts:
            answer = client.put("/api/test-runs", json={"environment": "production"})
            run = answer.raise_for_status().json()["data"]["test_run"]
            created = datetime.fromisoformat(run["created_at"].replace("Z", "+00:00")).timestamp()
            ends[run["id"]] = created + script["run_for"]
    warmup, *measured = ends  # the first run created is the warm-up one
    return warmup, {run_id: ends[run_id] for run_id in measured}


def create_dbt_runs(url: str, n: int) -> tuple[int, dict[int, float]]:
    """Run 0 is finished (warm-up); runs 1..n end LEAD..LEAD+SPREAD s from now."""
    import httpx

    now = time.time()
    ends = {i + 1: now + LEAD + SPREAD * i / n for i in range(n)}
    runs = {str(key): value for key, value in {0: now - 1, **ends}.items()}
    httpx.post(f"{url}/_setup", json={"runs": runs}, timeout=30).raise_for_status()
    return 0, ends


def make_trigger_factory(kind: str, url: str) -> Any:
    """A function run_id -> trigger, importing the provider's trigger class.

    For dbt over plain HTTP (`url` is http://...), the hook's https URLs are rewritten to http.
    """
    end_time = time.time() + 3600
    if kind == "empirical":
        from airflow_provider_empirical.triggers.empirical import EmpiricalTestRunTrigger

        return lambda run_id, poll=POLL: EmpiricalTestRunTrigger(run_id, end_time, "empirical_default", poll)

    from airflow.providers.dbt.cloud.hooks.dbt import DbtCloudHook
    from airflow.providers.dbt.cloud.triggers.dbt import DbtCloudRunJobTrigger

    def factory(run_id: int, poll: float = POLL) -> Any:
        return DbtCloudRunJobTrigger(
            conn_id="dbt_cloud_default", run_id=run_id, end_time=end_time, poll_interval=poll, account_id=1
        )

    if url.startswith("https://"):
        return factory
    https_url = DbtCloudHook.get_request_url_params

    def http_url(tenant: str, endpoint: str, include_related: Any = None, *, api_version: str = "v2") -> Any:
        full, data = https_url(tenant, endpoint, include_related, api_version=api_version)
        return full.replace("https://", "http://", 1), data

    DbtCloudHook.get_request_url_params = staticmethod(http_url)  # type: ignore[method-assign]
    return factory


async def first_event(trigger: Any) -> tuple[float, str]:
    """Drive `trigger.run()` to its first event; return (epoch time of the event, its status)."""
    events = trigger.run()
    try:
        async for event in events:
            return time.time(), str(event.payload.get("status"))
    finally:
        await events.aclose()
    return time.time(), "no event"


async def measure(factory: Any, warmup_id: int, ends: dict[int, float]) -> dict[str, Any]:
    await asyncio.wait_for(first_event(factory(warmup_id, 0.05)), timeout=60)
    gc.collect()
    baseline = rss_kb()
    reset_peak_rss()
    cpu0, t0 = time.process_time(), time.time()
    triggers = {run_id: factory(run_id) for run_id in ends}
    tasks = [asyncio.ensure_future(first_event(trigger)) for trigger in triggers.values()]
    done, pending = await asyncio.wait(tasks, timeout=LEAD + SPREAD + 90)
    cpu1, t1 = time.process_time(), time.time()
    peak = peak_rss_kb()
    for task in pending:
        task.cancel()
    lags: list[float] = []
    waited = 0.0  # seconds of waiting, summed over the triggers that got their event
    statuses = {"missing": len(pending)}
    for run_id, task in zip(triggers, tasks, strict=True):
        if task not in done:
            continue
        if task.exception() is not None:
            statuses["exception"] = statuses.get("exception", 0) + 1
            continue
        when, status = task.result()
        lags.append(when - ends[run_id])
        waited += when - t0
        statuses[status] = statuses.get(status, 0) + 1
    return {
        "cpu_s": cpu1 - cpu0,
        "t_start": t0,
        "t_end": t1,
        "baseline_kb": baseline,
        "peak_kb": peak,
        "lags": lags,
        "waited_s": waited,
        "statuses": statuses,
        "n": len(ends),
    }


def set_delay(kind: str, url: str, delay: float) -> None:
    """Every status answer from now on waits `delay` seconds (a remote API's round trip)."""
    import httpx

    if kind == "empirical":
        answer = httpx.post(f"{url}/_emulator/response-delay", json={"seconds": delay}, timeout=30)
    else:
        answer = httpx.post(f"{url}/_setup", json={"delay": delay}, timeout=30)
    answer.raise_for_status()


def child(kind: str, url: str, n: int, result: str, delay: float) -> None:
    factory = make_trigger_factory(kind, url)
    warmup_id, ends = (create_empirical_runs if kind == "empirical" else create_dbt_runs)(url, n)
    set_delay(kind, url, delay)  # after the 1,001 set-up requests, which need no round trip
    write_result(result, asyncio.run(measure(factory, warmup_id, ends)))


# -- parent -----------------------------------------------------------------------------------


def make_cert(home: Path) -> tuple[str, str]:
    """A throwaway self-signed certificate and key for 127.0.0.1, valid one day (openssl CLI)."""
    cert, key = home / "cert.pem", home / "key.pem"
    subject = ["-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"]
    files = ["-keyout", str(key), "-out", str(cert)]
    command = ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", *subject, *files]
    subprocess.run(command, check=True, capture_output=True, timeout=60)
    return str(cert), str(key)


def run_side(kind: str, tls: tuple[str, str] | None, delay: float = 0.0, n: int = N) -> dict[str, Any]:
    """Start the server and the trigger process for one provider and transport; add the server's counts."""
    from servers import DBT_TOKEN, Server

    name = f"density-{kind}-{'tls' if tls else 'http'}-{delay * 1000:.0f}ms"
    home = make_home(name)
    log = home / f"{name}.log"
    trust = {"SSL_CERT_FILE": tls[0]} if tls else {}
    with (
        open(home / "server.log", "w") as server_log,
        Server(kind, child_env(home), server_log, tls) as server,
    ):
        if kind == "empirical":
            conn = {"conn_type": "empirical", "host": server.url, "password": API_KEY}
            env = child_env(home, AIRFLOW_CONN_EMPIRICAL_DEFAULT=json.dumps(conn), **trust)
        else:
            conn = {
                "conn_type": "dbt_cloud",
                "host": f"127.0.0.1:{server.port}",
                "login": "1",
                "password": DBT_TOKEN,
            }
            env = child_env(home, AIRFLOW_CONN_DBT_CLOUD_DEFAULT=json.dumps(conn), **trust)
        args = [__file__, "child", "--kind", kind, "--url", server.url, "--n", str(n), "--delay", str(delay)]
        data = run_child(args, env, timeout=LEAD + SPREAD + 150, log=log)
        data.update(server.stats(data["t_start"], data["t_end"]))
    data["delay"] = delay
    return data


def summarize(data: dict[str, Any]) -> dict[str, float]:
    polls = max(1, data["polls"])
    return {
        "cpu_per_poll_us": data["cpu_s"] / polls * 1e6,
        "kb_per_trigger": (data["peak_kb"] - data["baseline_kb"]) / data["n"],
        "lag_max": max(data["lags"], default=math.nan),
        "lag_p95": percentile(data["lags"], 95),
        "polls": data["polls"],
        "conn_per_poll": data["connections"] / polls,
        "tls_per_poll": data["handshakes"] / polls,
        "cpu_s": data["cpu_s"],
        "wall_s": data["t_end"] - data["t_start"],
        "ok_events": data["statuses"].get("success", 0),
        "served": data["polls"] / max(1e-9, data["waited_s"] / (POLL + data["delay"])),
    }


def rows(
    label: str, ours: dict[str, float], dbt: dict[str, float], tls: bool, schedule: bool = False
) -> list[Row]:
    """The figure's rows for one setting; `label` goes after each metric, e.g. "(TLS)".

    `schedule` adds the polls-served row (a target only with a round trip, where it can fail).
    """
    fig = f"2. Triggerer, {N:,} triggers"
    lag_limit = POLL + 1.0
    out = [
        Row(
            fig,
            f"CPU per status poll {label}",
            fmt(ours["cpu_per_poll_us"], "µs", 0),
            fmt(dbt["cpu_per_poll_us"], "µs", 0),
            "<= 1/2 of dbt",
            ours["cpu_per_poll_us"] <= dbt["cpu_per_poll_us"] / 2,
        ),
        Row(
            fig,
            f"peak RSS per waiting trigger {label}",
            fmt(ours["kb_per_trigger"], "KiB"),
            fmt(dbt["kb_per_trigger"], "KiB"),
            "<= 1/2 of dbt",
            ours["kb_per_trigger"] <= dbt["kb_per_trigger"] / 2,
        ),
        Row(
            fig,
            f"event lag after run end, max {label}",
            fmt(ours["lag_max"], "s", 2),
            fmt(dbt["lag_max"], "s", 2),
            f"<= {lag_limit:g} s (poll {POLL:g} s + 1 s)",
            ours["lag_max"] <= lag_limit and ours["ok_events"] == N,
        ),
        Row(
            fig,
            f"event lag after run end, p95 {label}",
            fmt(ours["lag_p95"], "s", 2),
            fmt(dbt["lag_p95"], "s", 2),
            "-",
            None,
        ),
        Row(
            fig,
            f"success events / status polls {label}",
            f"{ours['ok_events']:,} / {ours['polls']:,}",
            f"{dbt['ok_events']:,} / {dbt['polls']:,}",
            f"{N:,} events each",
            ours["ok_events"] == N,
        ),
    ]
    if schedule:
        out.append(
            Row(
                fig,
                f"status polls served / schedule {label}",
                fmt(ours["served"] * 100, "%", 0),
                fmt(dbt["served"] * 100, "%", 0),
                ">= 95%",
                ours["served"] >= 0.95,
            )
        )
    out += [
        Row(
            fig,
            f"TCP connections accepted per poll {label}",
            fmt(ours["conn_per_poll"], "", 3),
            fmt(dbt["conn_per_poll"], "", 3),
            "-",
            None,
        ),
    ]
    if tls:
        out.append(
            Row(
                fig,
                f"TLS handshakes per poll {label}",
                fmt(ours["tls_per_poll"], "", 3),
                fmt(dbt["tls_per_poll"], "", 3),
                "-",
                None,
            )
        )
    out.append(
        Row(
            fig,
            f"trigger-process CPU / wall time {label}",
            f"{ours['cpu_s']:.1f} s / {ours['wall_s']:.1f} s",
            f"{dbt['cpu_s']:.1f} s / {dbt['wall_s']:.1f} s",
            "-",
            None,
        )
    )
    return out


def run() -> Figure:
    """Both providers over TLS with a 100 ms round trip (decides), then the loopback settings."""
    tls = make_cert(make_home("density-cert"))
    remote = summarize(run_side("empirical", tls, RTT)), summarize(run_side("dbt", tls, RTT))
    over_tls = summarize(run_side("empirical", tls)), summarize(run_side("dbt", tls))
    plain = summarize(run_side("empirical", None)), summarize(run_side("dbt", None))
    return Figure(
        rows(f"(TLS, {RTT * 1000:.0f} ms round trip)", *remote, tls=True, schedule=True)
        + rows("(TLS)", *over_tls, tls=True)
        + rows("(plain HTTP, reference)", *plain, tls=False)
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["child", "parent"], nargs="?", default="parent")
    parser.add_argument("--kind", choices=["empirical", "dbt"])
    parser.add_argument("--url")
    parser.add_argument("--n", type=int, default=N)
    parser.add_argument("--delay", type=float, default=0.0)
    parser.add_argument("--result")
    args = parser.parse_args()
    if args.mode == "child":
        child(args.kind, args.url, args.n, args.result, args.delay)
    else:
        from run_all import main as run_all

        raise SystemExit(run_all(["--only", "2"]))


if __name__ == "__main__":
    main()
