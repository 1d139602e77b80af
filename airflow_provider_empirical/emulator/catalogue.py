"""Fixed data of every emulated project: its environments and its Playwright test cases.

Test identity lives here too. A test is known by a *key*: the Playwright id of a catalogue case,
or the name of an ad-hoc test a RunScript invented. Both resolve to a TestInfo (name, Playwright
id, nesting, Playwright project), so per-test rows, test cases and trigger selections agree.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

SEP = " \u203a "  # Playwright's title separator (a single right-pointing angle quote)
PW_ID = re.compile(r"^[a-f0-9]{20}-[a-f0-9]{20}$")
PLAYWRIGHT_PROJECTS = ("chromium", "firefox")
SYNC_SHA = "9c1e5f0b7a2d4c6e8f0a1b3c5d7e9f1a2b4c6d8e"  # the commit of the latest test-case sync
OLD_SHA = "4b7d2e9a1c3f5e7a9b1d3f5a7c9e1b3d5f7a9c1e"  # an older sync: cases last seen there are stale
FIRST_SHA = "1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b"
CASES_CREATED = "2026-01-15T10:30:00Z"  # timestamps of catalogue rows (no milliseconds, as documented)
CASES_UPDATED = "2026-03-02T08:15:00Z"
SYNC_ERROR = {
    "message": "Test case sync failed: playwright.config.ts could not be loaded (SyntaxError)",
    "occurred_at": "2026-03-02T08:14:57.000Z",
}

# id, slug, name, Playwright projects, default, disabled
ENVIRONMENTS: tuple[dict[str, Any], ...] = (
    {"id": 1, "slug": "production", "name": "Production", "is_default": True, "is_disabled": False},
    {"id": 2, "slug": "staging", "name": "Staging", "is_default": False, "is_disabled": False},
    {"id": 3, "slug": "development", "name": "Development", "is_default": False, "is_disabled": False},
    {"id": 4, "slug": "legacy", "name": "Legacy", "is_default": False, "is_disabled": True},
)
ENVIRONMENT_PROJECTS = {1: ["chromium", "firefox"], 2: ["chromium", "firefox"], 3: ["chromium", "firefox"]}
ENVIRONMENTS_CREATED = "2025-11-03T08:00:00Z"
ENVIRONMENTS_UPDATED = "2026-02-20T16:45:00Z"


def environment(slug: str) -> dict[str, Any] | None:
    """The environment with this slug (enabled or not), or None."""
    return next((dict(e) for e in ENVIRONMENTS if e["slug"] == slug), None)


def environment_by_id(env_id: int) -> dict[str, Any] | None:
    """The environment with this id, or None."""
    return next((dict(e) for e in ENVIRONMENTS if e["id"] == env_id), None)


def enabled_slugs() -> list[str]:
    """Slugs a run can be triggered on."""
    return [e["slug"] for e in ENVIRONMENTS if not e["is_disabled"]]


def environment_row(
    env: dict[str, Any], project_id: int, latest_build: dict[str, Any] | None
) -> dict[str, Any]:
    """An environment as GET /api/environments/list shows it."""
    return {
        "id": env["id"],
        "project_id": project_id,
        "slug": env["slug"],
        "name": env["name"],
        "playwright_projects": list(ENVIRONMENT_PROJECTS.get(env["id"], ["chromium"])),
        "platform": "web",
        "is_default": env["is_default"],
        "is_disabled": env["is_disabled"],
        "created_at": ENVIRONMENTS_CREATED,
        "updated_at": ENVIRONMENTS_UPDATED,
        "latest_build": latest_build,
    }


def _hex(text: str, size: int) -> str:
    return hashlib.sha1(text.encode()).hexdigest()[:size]


@functools.lru_cache(maxsize=8192)
def diagnosis_slug(info: TestInfo) -> str:
    """The diagnosis slug a failed or flaky row carries: its title path, slugified, plus a hash."""
    text = re.sub(r"[^a-z0-9]+", "-", info.title_path.lower()).strip("-")
    return f"{text}-{_hex('slug:' + info.title_path, 6)}"


def playwright_id(file_path: str, title_path: str) -> str:
    """A Playwright-like test id, "<file hash>-<test hash>": the file part is shared per file."""
    return f"{_hex('file:' + file_path, 20)}-{_hex('test:' + title_path, 20)}"


@dataclass(frozen=True)
class TestInfo:
    """What a per-test row says about a test.

    ``title`` and ``title_path`` are the two candidates for a row's ``name``: the bare title, or
    the describe blocks and title joined with Playwright's separator. An ad-hoc test's name is
    its key, verbatim, in both.
    """

    __test__ = False  # not a pytest test class

    key: str
    title: str
    title_path: str
    pw_test_id: str
    nesting: tuple[str, ...]  # file, then describe blocks, then the title
    test_project: str


@dataclass(frozen=True)
class TestCase:
    """One catalogue entry: a Playwright test in one Playwright project."""

    __test__ = False

    title: str
    file_path: str
    suites: tuple[str, ...]
    playwright_project: str
    tags: tuple[str, ...] = ()
    active: bool = True
    serial: tuple[str, int, int] | None = None  # (group title, position from 1, group size)

    @property
    def id(self) -> str:
        return playwright_id(
            self.file_path, f"{self.playwright_project}:{SEP.join((*self.suites, self.title))}"
        )

    def info(self) -> TestInfo:
        nesting = (self.file_path, *self.suites, self.title)
        path = SEP.join(nesting[1:])
        return TestInfo(self.id, self.title, path, self.id, nesting, self.playwright_project)


def _cases() -> tuple[TestCase, ...]:
    chromium, firefox = PLAYWRIGHT_PROJECTS
    cases: list[TestCase] = []

    def add(
        file_path: str, suites: tuple[str, ...], title: str, tags: tuple[str, ...] = (), **kw: Any
    ) -> None:
        projects = kw.pop("projects", (chromium,))
        for project in projects:
            cases.append(TestCase(title, file_path, suites, project, tags, **kw))

    add("checkout/cart.spec.ts", ("cart",), "adds an item to the cart", ("@smoke",))
    add("checkout/cart.spec.ts", ("cart",), "keeps items after reload")
    add("checkout/cart.spec.ts", ("cart",), "removes an item")
    flow = ("checkout flow",)
    add(
        "checkout/flow.spec.ts",
        flow,
        "fills the shipping address",
        ("@checkout",),
        serial=("checkout flow", 1, 3),
    )
    add(
        "checkout/flow.spec.ts",
        flow,
        "chooses a delivery slot",
        ("@checkout",),
        serial=("checkout flow", 2, 3),
    )
    add(
        "checkout/flow.spec.ts",
        flow,
        "places the order",
        ("@checkout", "@smoke"),
        serial=("checkout flow", 3, 3),
    )
    both = (chromium, firefox)
    add("checkout/payment.spec.ts", ("payment",), "pays with card", ("@smoke", "@payments"), projects=both)
    add("checkout/payment.spec.ts", ("payment",), "applies a discount code", ("@payments",), projects=both)
    add("checkout/payment.spec.ts", ("payment",), "rejects an expired card", ("@payments",))
    add("login.spec.ts", (), "signs in with email", ("@smoke", "@auth"), projects=both)
    add("login.spec.ts", (), "rejects a wrong password", ("@auth",), projects=both)
    add("login.spec.ts", (), "logs out everywhere", ("@auth",), projects=both)
    add("profile/settings.spec.ts", ("settings",), "updates the avatar")
    add("profile/settings.spec.ts", ("settings",), "saves the new password", ("@auth",))
    add("profile/settings.spec.ts", ("settings",), "invites a teammate", active=False)
    add("search/filters.spec.ts", ("filters", "price"), "filters by price range")
    add("search/filters.spec.ts", ("filters",), "clears all filters")
    add(
        "search/results.spec.ts", ("search results",), "shows only matching cards", ("@smoke",), projects=both
    )
    add("search/results.spec.ts", ("search results",), "paginates long results")
    # a file's chromium cases first, then its firefox ones (as Playwright lists projects)
    order = {c: i for i, c in enumerate(cases)}
    return tuple(sorted(cases, key=lambda c: (c.file_path, c.playwright_project != chromium, order[c])))


CASES: tuple[TestCase, ...] = _cases()
BY_ID: dict[str, TestCase] = {c.id: c for c in CASES}
ACTIVE_IDS: tuple[str, ...] = tuple(c.id for c in CASES if c.active)
_BY_TITLE: dict[str, str] = {}
for _case in CASES:
    if _case.active:
        _BY_TITLE.setdefault(_case.title, _case.id)  # the first project's case (chromium)


def test_case_row(case: TestCase) -> dict[str, Any]:
    """A catalogue case as GET /api/v2/test-cases shows it."""
    serial = None
    if case.serial is not None:
        group, position, size = case.serial
        members = [
            c
            for c in CASES
            if c.serial is not None
            and c.serial[0] == group
            and c.file_path == case.file_path
            and c.playwright_project == case.playwright_project
        ]
        serial = {
            "group_id": _hex(f"serial:{case.file_path}:{group}:{case.playwright_project}", 16),
            "title_path": [*case.suites],
            "file_path": case.file_path,
            "playwright_project": case.playwright_project,
            "dependency_order": position,
            "group_size": size,
            "depends_on": [c.id for c in members if c.serial is not None and c.serial[1] < position],
        }
    return {
        "id": case.id,
        "name": case.title,
        "file_path": case.file_path,
        "suites": list(case.suites),
        "playwright_project": case.playwright_project,
        "tags": list(case.tags),
        "created_at": CASES_CREATED,
        "updated_at": CASES_UPDATED,
        "first_seen_commit_sha": FIRST_SHA,
        "last_seen_commit_sha": SYNC_SHA if case.active else OLD_SHA,
        "dependencies": {"playwright_serial": serial},
    }


# --- ad-hoc tests (names a RunScript invents) -----------------------------------------------------

SUITES = ("checkout", "login", "search", "cart", "profile", "settings", "onboarding")
ACTIONS = (
    "pays with card",
    "signs in with email",
    "shows only matching cards",
    "keeps items after reload",
    "updates the avatar",
    "saves the new password",
    "invites a teammate",
    "applies a discount code",
    "logs out everywhere",
)


def generated_name(index: int) -> str:
    """Deterministic name of the index-th generated ad-hoc test (1-based): "checkout > pays with
    card #1", with Playwright's separator (U+203A) in place of ">"."""
    return f"{SUITES[(index - 1) % len(SUITES)]}{SEP}{ACTIONS[(index - 1) % len(ACTIONS)]} #{index}"


def pool() -> Iterator[str]:
    """Keys of the tests an unscripted run executes, in order: the active catalogue, then as many
    generated ad-hoc tests as a large total needs."""
    extra = (generated_name(i) for i in itertools.count(len(ACTIVE_IDS) + 1))
    return itertools.chain(ACTIVE_IDS, extra)


def resolve(entry: str) -> str:
    """The key of a test named in a script: a catalogue id, a catalogue title (its first Playwright
    project's case), else the name itself (an ad-hoc test)."""
    if entry in BY_ID:
        return entry
    return _BY_TITLE.get(entry, entry)


@functools.lru_cache(maxsize=8192)
def describe(key: str) -> TestInfo:
    """Names, id, nesting and Playwright project of a test key.

    An ad-hoc test keeps its name verbatim. An ad-hoc name "a > b > c" (with U+203A) lives in
    a.spec.ts under describe blocks a and b; a name without a separator lives in e2e.spec.ts with
    no describe block.
    """
    case = BY_ID.get(key)
    if case is not None:
        return case.info()
    parts = key.split(SEP)
    if len(parts) > 1:
        file_path = f"{parts[0]}.spec.ts"
        nesting = (file_path, *parts)
    else:
        file_path = "e2e.spec.ts"
        nesting = (file_path, key)
    return TestInfo(key, key, key, playwright_id(file_path, key), nesting, PLAYWRIGHT_PROJECTS[0])
