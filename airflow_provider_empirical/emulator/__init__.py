"""A local emulator of the Empirical API (test runs, snoozes, test cases, environments, analytics),
for tests, demos and offline development.

Standard library only and cheap to import (the HTTP server is loaded on start()), so it can be
used in-process by tests or run as ``python -m airflow_provider_empirical.emulator``.
"""

from .emulator import Emulator
from .models import Fault, RecordedRequest, RunScript

__all__ = ["Emulator", "Fault", "RecordedRequest", "RunScript"]
