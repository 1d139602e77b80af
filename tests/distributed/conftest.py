"""The distributed tier's figures, printed at the end of the session (tests/distributed)."""

from __future__ import annotations

import json
from typing import Any


def pytest_terminal_summary(terminalreporter: Any) -> None:
    from tests.distributed_helpers import REPORT

    if not REPORT:
        return
    terminalreporter.section("distributed tier: per scenario")
    for name, figures in REPORT.items():
        terminalreporter.write_line(f"{name}: {json.dumps(figures, sort_keys=True, default=str)}")
