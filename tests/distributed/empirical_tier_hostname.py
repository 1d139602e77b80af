"""`[core] hostname_callable` for the distributed tier: every Airflow process of the tier runs on
this one machine, so each gets the name of the "machine" it plays (EMPIRICAL_TIER_HOSTNAME, e.g.
worker1, triggerer2). Task instances then show which worker ran them, and triggerer jobs which
triggerer holds a trigger, through the REST API. Imported by Airflow itself (PYTHONPATH)."""

from __future__ import annotations

import os
import socket


def hostname() -> str:
    return os.environ.get("EMPIRICAL_TIER_HOSTNAME") or socket.getfqdn()
