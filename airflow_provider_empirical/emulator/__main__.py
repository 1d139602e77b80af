"""Command line: serve the emulator until SIGTERM or SIGINT, then exit 0."""

from __future__ import annotations

import argparse
import os
import signal
import time
from types import FrameType

from .emulator import Emulator
from .state import SWITCHES


def _switch(text: str) -> tuple[str, object]:
    """NAME=VALUE; true/false are booleans, anything else a string (checked by the Emulator)."""
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    return name, {"true": True, "false": False}.get(value, value)


class _Stop(Exception):
    """Raised by the signal handler to leave the serving loop."""


def _on_signal(signum: int, frame: FrameType | None) -> None:
    raise _Stop


def main(argv: list[str] | None = None) -> int:
    """Start the emulator, announce its URL (and port file), serve until signalled."""
    parser = argparse.ArgumentParser(
        prog="python -m airflow_provider_empirical.emulator",
        description="Local emulator of the Empirical test-runs API.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=0, help="port to bind; 0 picks a free one (default)")
    parser.add_argument(
        "--api-key",
        action="append",
        dest="api_keys",
        metavar="KEY",
        help="accepted API key, bound to project 1; repeatable (default: emulator-key)",
    )
    parser.add_argument("--port-file", help="write the bound port to this file once listening")
    parser.add_argument("--verbose", action="store_true", help="log every request to stderr")
    parser.add_argument("--tls-cert", help="serve https with this certificate (PEM); needs --tls-key")
    parser.add_argument("--tls-key", help="the certificate's private key (PEM)")
    parser.add_argument(
        "--response-delay",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="seconds added before every /api/ answer (default 0)",
    )
    parser.add_argument(
        "--shape",
        choices=("nested", "flat"),
        default="nested",
        help="answer of GET /api/test-runs/{id}: the run under data.test_run.testRun beside per-test "
        "rows (nested, default) or directly under data.test_run (flat)",
    )
    parser.add_argument(
        "--switch",
        action="append",
        dest="switches",
        type=_switch,
        default=[],
        metavar="NAME=VALUE",
        help="serve one of the behaviours the evidence leaves open; repeatable. "
        f"Switches: {', '.join(SWITCHES)} (see docs/emulator.md)",
    )
    args = parser.parse_args(argv)

    keys = {key: 1 for key in (args.api_keys or ["emulator-key"])}
    tls = (args.tls_cert, args.tls_key) if args.tls_cert else None
    if not args.response_delay >= 0:
        parser.error("--response-delay must be >= 0")
    try:
        emulator = Emulator(
            api_keys=keys,
            host=args.host,
            port=args.port,
            verbose=args.verbose,
            tls=tls,
            response_delay=args.response_delay,
            shape=args.shape,
            switches=dict(args.switches),
        )
    except ValueError as exc:
        parser.error(f"--switch: {exc}")
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    try:
        emulator.start()
        print(f"Empirical emulator listening on {emulator.url}", flush=True)
        if args.port_file:
            temporary = f"{args.port_file}.tmp{os.getpid()}"
            with open(temporary, "w") as handle:
                handle.write(f"{emulator.port}\n")
            os.replace(temporary, args.port_file)  # readers never see a half-written file
        while True:
            time.sleep(3600)
    except _Stop:
        pass
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second signal must not interrupt the shutdown
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        emulator.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
