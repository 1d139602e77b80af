"""What a task remembers across its tries: Airflow 3.3's durable task state, behind small stores.

`context["task_state_store"]` (Airflow 3.3+) keeps JSON values per task instance across tries,
reschedules and clears, where XCom is wiped at every new try. Older Airflow has none: there
`RunStore.of` / `ChoiceStore.of` return None and every try starts afresh.

What is stored, and why:
- `RunStore`: the run the operator started, with a digest of the request that started it, so a
  retry re-attaches to that run (or returns its result) instead of starting another one, but
  only while the task still asks for the same thing; and a "trigger sent" mark, written right
  before a trigger request leaves, so that a try that died mid-request is not followed by a
  second run.
- `ChoiceStore`: the run a sensor with filters chose, so that a reschedule does not switch runs.
- `SnoozeStore`: the snooze the snooze operator created, so that a retry does not create another.

A value that cannot be read (corrupt, or written by something else) is logged and forgotten:
a stale memory must never block a task for good.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from airflow_provider_empirical.api.test_runs import int_or_none

STORED_RUN_KEY = "empirical_test_run"
TRIGGER_SENT_KEY = "empirical_trigger_sent"
SENSOR_CHOICE_KEY = "empirical_sensor_choice"
SNOOZE_KEY = "empirical_snooze"
SNOOZE_SENT_KEY = "empirical_snooze_sent"
NOT_FOUND_GRACE = 30.0  # a stored run younger than this that answers 404 is looked at again


def body_digest(body: Mapping[str, Any]) -> str:
    """A short digest of a request body."""
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:32]


def request_digest(body: Mapping[str, Any]) -> str:
    """What a trigger request asks for, as a short digest: the same rendered request, the same digest.

    The try number in the metadata changes from try to try without changing what is asked.
    """
    metadata = {k: v for k, v in (body.get("metadata") or {}).items() if k != "airflow_try_number"}
    return body_digest({**body, "metadata": metadata})


@dataclass(frozen=True)
class StoredRun:
    """The run an earlier try started."""

    id: int
    digest: str | None  # of the request that started it (None: a re-run, which keeps its source's)
    rerun_of: int | None  # the run it re-runs, when it is a re-run of failed tests
    stored_at: float  # epoch seconds


class RunStore:
    """The operator's memory across tries of one task instance."""

    def __init__(self, accessor: Any, log: Any) -> None:
        self._accessor = accessor
        self.log = log

    @classmethod
    def of(cls, context: Mapping[str, Any], log: Any, *, enabled: bool = True) -> RunStore | None:
        accessor = context.get("task_state_store") if enabled else None
        return cls(accessor, log) if accessor is not None else None

    def stored_run(self) -> StoredRun | None:
        """The run an earlier try stored; a value that cannot be read is logged and forgotten."""
        value = self._accessor.get(STORED_RUN_KEY)
        if value is None:
            return None
        run_id = int_or_none(value.get("id")) if isinstance(value, dict) else None
        if not run_id:
            self.log.warning(
                "The durable task state holds a test run that cannot be read (%s under %r): forgetting it "
                "and starting afresh",
                type(value.get("id") if isinstance(value, dict) else value).__name__,
                STORED_RUN_KEY,
            )
            self.forget()
            return None
        digest = value.get("digest")
        rerun_of = int_or_none(value.get("rerun_of"))
        stored_at = value.get("stored_at")
        return StoredRun(
            id=run_id,
            digest=digest if isinstance(digest, str) else None,
            rerun_of=rerun_of or None,
            stored_at=float(stored_at) if isinstance(stored_at, (int, float)) else 0.0,
        )

    def remember(self, run_id: int, *, digest: str | None, rerun_of: int | None) -> None:
        value = {"id": run_id, "digest": digest, "rerun_of": rerun_of, "stored_at": time.time()}
        self._accessor.set(STORED_RUN_KEY, value)

    def forget(self) -> None:
        self._accessor.delete(STORED_RUN_KEY)

    # -- the trigger-sent mark --

    def trigger_sent(self) -> bool:
        """An earlier try sent a trigger request and never learned what came of it (it died)."""
        return SendingMark(self._accessor, TRIGGER_SENT_KEY).set()

    def mark_sending(self, try_number: int) -> None:
        """Written right before a request that creates a run leaves; cleared once its answer is known."""
        SendingMark(self._accessor, TRIGGER_SENT_KEY).mark(try_number)

    def clear_sending(self) -> None:
        SendingMark(self._accessor, TRIGGER_SENT_KEY).clear()


class SendingMark:
    """A mark written right before a request that creates something leaves, and cleared once its
    answer (or a failure that proves nothing was created, or one the task reports) is known:
    only a try that died mid-request leaves it behind."""

    def __init__(self, accessor: Any, key: str) -> None:
        self._accessor = accessor
        self.key = key

    def set(self) -> bool:
        return self._accessor.get(self.key) is not None

    def mark(self, try_number: int) -> None:
        self._accessor.set(self.key, {"at": time.time(), "try_number": try_number})

    def clear(self) -> None:
        self._accessor.delete(self.key)


class SnoozeStore:
    """The snooze operator's memory across tries: the snooze it created, for the request it sent."""

    def __init__(self, accessor: Any) -> None:
        self._accessor = accessor
        self.sending = SendingMark(accessor, SNOOZE_SENT_KEY)

    @classmethod
    def of(cls, context: Mapping[str, Any]) -> SnoozeStore | None:
        accessor = context.get("task_state_store")
        return cls(accessor) if accessor is not None else None

    def created(self, digest: str) -> int | None:
        """The snooze an earlier try created for the same request, if any."""
        value = self._accessor.get(SNOOZE_KEY)
        if not isinstance(value, dict) or value.get("digest") != digest:
            return None
        return int_or_none(value.get("id")) or None

    def remember(self, snooze_id: int, digest: str) -> None:
        self._accessor.set(SNOOZE_KEY, {"id": snooze_id, "digest": digest})


class ChoiceStore:
    """The run a sensor with filters chose, kept across its reschedules within one try."""

    def __init__(self, accessor: Any) -> None:
        self._accessor = accessor

    @classmethod
    def of(cls, context: Mapping[str, Any]) -> ChoiceStore | None:
        accessor = context.get("task_state_store")
        return cls(accessor) if accessor is not None else None

    def chosen(self, try_number: int) -> int | None:
        """The run chosen by this try (a new try, e.g. a retry or a clear, chooses again)."""
        value = self._accessor.get(SENSOR_CHOICE_KEY)
        if not isinstance(value, dict) or value.get("try_number") != try_number:
            return None
        return int_or_none(value.get("id")) or None

    def choose(self, run_id: int, try_number: int) -> None:
        self._accessor.set(SENSOR_CHOICE_KEY, {"id": run_id, "try_number": try_number})
