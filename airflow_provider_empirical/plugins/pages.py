"""The plugin's HTML: one self-contained page per view, from the data of `views` (no template engine).

Every value is escaped; a link is only ever an http(s) URL (anything else is dropped); the
page loads nothing from elsewhere (inline CSS, an inline SVG chart, one small inline script
allowed by a per-response nonce). Filters and paging are plain links and a GET form, so the
tables work without the script; the script only opens Empirical's pages in a new browser tab
from inside Airflow's sandboxed iframe (which grants no popups of its own).
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from typing import Any
from urllib.parse import urlencode

from airflow_provider_empirical.plugins import views

REFRESH_SECONDS = 15  # a run still going: the tab reloads itself

_CSS = """
:root{color-scheme:light dark;--fg:#1a202c;--muted:#5a6473;--line:#d9dee7;--bg:#fff;--card:#f7f8fa;
--ok:#1e7f45;--bad:#c53030;--warn:#b7791f;--info:#2b6cb0;--snz:#6b46c1}
@media (prefers-color-scheme:dark){:root{--fg:#e2e8f0;--muted:#a0aec0;--line:#2d3748;--bg:#1a202c;
--card:#232b38;--ok:#48bb78;--bad:#fc8181;--warn:#f6ad55;--info:#63b3ed;--snz:#b794f4}}
*{box-sizing:border-box}body{margin:0;padding:16px 20px;font:14px/1.45 system-ui,-apple-system,"Segoe UI",
Roboto,sans-serif;color:var(--fg);background:var(--bg)}h1{font-size:18px;margin:0 0 8px}h2{font-size:15px;
margin:20px 0 8px}a{color:var(--info)}.muted{color:var(--muted)}.card{background:var(--card);border:1px solid
var(--line);border-radius:8px;padding:12px 16px;margin:0 0 12px}.badge{display:inline-block;padding:1px 8px;
border-radius:10px;font-size:12px;font-weight:600;border:1px solid currentColor}.ok{color:var(--ok)}
.bad{color:var(--bad)}.warn{color:var(--warn)}.info{color:var(--info)}.snz{color:var(--snz)}
.grid{display:flex;flex-wrap:wrap;gap:8px 28px;margin:8px 0}.grid div b{display:block;font-size:18px}
.grid div span{font-size:12px;color:var(--muted)}table{border-collapse:collapse;width:100%}
th,td{text-align:left;padding:5px 8px;border-bottom:1px solid var(--line);vertical-align:top}
th{font-size:12px;color:var(--muted);font-weight:600}td.name{word-break:break-word}
nav.tabs{display:flex;gap:4px;margin:8px 0;flex-wrap:wrap}nav.tabs a{padding:4px 12px;border:1px solid
var(--line);border-radius:6px;text-decoration:none;color:var(--fg)}nav.tabs a.on{background:var(--info);
color:#fff;border-color:var(--info)}form.search{display:inline-flex;gap:6px;margin-left:8px}
form.search input{padding:3px 8px;border:1px solid var(--line);border-radius:6px;background:var(--bg);
color:var(--fg)}dl.meta{display:grid;grid-template-columns:max-content 1fr;gap:2px 14px;margin:6px 0}
dl.meta dt{color:var(--muted)}dl.meta dd{margin:0;word-break:break-all}.links a{margin-right:14px}
.pager{margin:8px 0}.pager a{margin:0 6px}.note{font-size:12px;color:var(--muted);margin:4px 0}
svg.chart text{font-size:10px;fill:var(--muted)}
"""

# Airflow shows this page in an iframe sandboxed without `allow-popups`: a link with
# target=_blank would do nothing there. The frame is same-origin with Airflow's page (the
# sandbox allows it), so the new tab is opened from that page instead.
_SCRIPT = """
document.addEventListener("click", function (event) {
  var link = event.target.closest && event.target.closest("a[target=_blank]");
  if (!link || window.top === window) { return; }
  try {
    var doc = window.top.document, twin = doc.createElement("a");
    twin.href = link.href; twin.target = "_blank"; twin.rel = "noopener noreferrer";
    doc.body.appendChild(twin); twin.click(); twin.remove(); event.preventDefault();
  } catch (error) { /* not same-origin: let the browser do what it can */ }
});
"""


def e(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def safe_url(url: Any) -> str | None:
    """An http(s) URL, or None: no javascript:, data: or relative URL from an answer reaches an href."""
    if isinstance(url, str) and url.lower().startswith(("https://", "http://")):
        return url
    return None


def out_link(url: Any, text: str) -> str:
    """A link to Empirical (or a build), opened in a new tab; plain text when the URL is unusable."""
    href = safe_url(url)
    if href is None:
        return e(text)
    return f'<a href="{e(href)}" target="_blank" rel="noopener noreferrer">{e(text)}</a>'


def document(title: str, body: str, nonce: str, *, refresh: int | None = None) -> str:
    meta = f'<meta http-equiv="refresh" content="{int(refresh)}">' if refresh else ""
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f'<meta name="referrer" content="no-referrer">{meta}<title>{e(title)}</title>'
        f"<style>{_CSS}</style></head><body>{body}"
        f'<script nonce="{e(nonce)}">{_SCRIPT}</script></body></html>'
    )


def message_page(title: str, message: str, nonce: str) -> str:
    return document(title, f'<h1>{e(title)}</h1><div class="card"><p>{e(message)}</p></div>', nonce)


def _when(epoch: float | None) -> str:
    if epoch is None:
        return ""
    return datetime.fromtimestamp(epoch, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


_OUTCOME_CLASS = {
    "success": "ok",
    "failed": "bad",
    "error": "bad",
    "cancelled": "warn",
    "empty": "warn",
    "unreadable": "warn",
}


def _verdict_badge(outcome: str | None, passes: bool | None) -> str:
    if outcome is None:
        return '<span class="badge info">running</span>'
    css = "ok" if passes else _OUTCOME_CLASS.get(outcome, "warn")
    label = {"success": "passed"}.get(outcome, outcome)
    return f'<span class="badge {css}">{e(label)}</span>'


def _count(value: Any) -> str:
    return "?" if value is None else e(value)


# -- the "Empirical tests" tab ---------------------------------------------------------------------


def task_page(
    data: Mapping[str, Any],
    *,
    status: str,
    query: str,
    page: int,
    map_index: int,
    nonce: str,
) -> str:
    """The tab: the run's header, then one page of the tests table under its status filter."""
    run, verdict, counts = data["test_run"], data["verdict"], data["counts"]
    links, task = data["links"], data["task"]
    title = f"Empirical test run {run['id']}"
    parts = [
        f"<h1>{e(title)} {_verdict_badge(verdict and verdict['outcome'], verdict and verdict['passes'])}</h1>"
    ]

    header = ['<div class="card">']
    if verdict is not None:
        word = "passes" if verdict["passes"] else "fails"
        header.append(f"<div><b>Verdict:</b> the task's pass policy {word}: {e(verdict['reason'])}</div>")
    else:
        header.append(
            f"<div><b>State:</b> {e(run['state'])}. The run is not finished; this page reloads every "
            f"{REFRESH_SECONDS} s.</div>"
        )
    if run.get("error"):
        header.append(f'<div class="bad">{e(run["error"])}</div>')
    if run.get("unreadable"):
        header.append(f'<div class="warn">Could not be read: {e("; ".join(run["unreadable"]))}</div>')
    failed_label = "failed (counting)"
    grid = [
        ("total", counts["total"]),
        ("passed", counts["passed"]),
        (failed_label, counts["failed_counting"]),
        ("failed in all", counts["failed"]),
        ("snoozed", counts["snoozed"]),
        ("flaky", counts["flaky"]),
        ("skipped", counts["skipped"]),
    ]
    header.append('<div class="grid">')
    for label, value in grid:
        header.append(f"<div><b>{_count(value)}</b><span>{e(label)}</span></div>")
    header.append(f"<div><b>{e(run.get('duration') or '?')}</b><span>duration</span></div></div>")
    meta = [
        ("state", run["state"]),
        ("environment", run.get("environment")),
        ("test branch", run.get("branch")),
        ("commit", run.get("commit")),
        ("build branch", run.get("build_branch")),
        ("created", run.get("created_at")),
    ]
    header.append('<dl class="meta">')
    for label, value in meta:
        if value:
            header.append(f"<dt>{e(label)}</dt><dd>{e(value)}</dd>")
    if run.get("build_url"):
        header.append(f"<dt>build</dt><dd>{out_link(run['build_url'], run['build_url'])}</dd>")
    header.append("</dl>")
    link_items = [
        out_link(links.get("run"), "Open the run in Empirical") if links.get("run") else "",
        out_link(links.get("report"), "Playwright report") if links.get("report") else "",
        out_link(links.get("snoozes"), "Snoozes") if links.get("snoozes") else "",
    ]
    header.append(f'<div class="links">{"".join(link_items)}</div>')
    notes = [
        f"Task {task['task_id']} ({task.get('operator') or '?'}), state {task.get('state') or 'none'}; "
        f"run found through {task.get('test_run_found_by')}, connection {task.get('connection')}.",
    ]
    if data.get("policy_note"):
        notes.append(data["policy_note"])
    if verdict is not None and counts.get("counting_basis"):
        notes.append(f"Failures counted from {counts['counting_basis']}.")
    notes.append(f"As of {_when(data.get('fetched_at'))}{' (from memory)' if data.get('cached') else ''}.")
    header.extend(f'<div class="note">{e(note)}</div>' for note in notes)
    header.append("</div>")
    parts.extend(header)

    parts.append(_tests_section(data, status=status, query=query, page=page, map_index=map_index))
    return document(title, "".join(parts), nonce, refresh=None if run["finished"] else REFRESH_SECONDS)


def _query(**params: Any) -> str:
    return "?" + urlencode({key: value for key, value in params.items() if value not in (None, "")})


def _tests_section(data: Mapping[str, Any], *, status: str, query: str, page: int, map_index: int) -> str:
    tests, listed = data["tests"], data["listed"]
    keep = {"map_index": map_index if map_index != -1 else None}
    sizes = {kind: len(tests[kind]) for kind in ("failed", "snoozed", "flaky")}
    sizes["all"] = sum(sizes.values())
    labels = {"failed": "Failed (counting)", "snoozed": "Snoozed", "flaky": "Flaky", "all": "All"}
    tabs = "".join(
        f'<a class="{"on" if kind == status else ""}" href="{e(_query(status=kind, q=query, **keep))}">'
        f"{e(labels[kind])} {sizes[kind]}</a>"
        for kind in views.STATUSES
    )
    search = (
        '<form class="search" method="get">'
        f'<input type="hidden" name="status" value="{e(status)}">'
        + (f'<input type="hidden" name="map_index" value="{map_index}">' if map_index != -1 else "")
        + f'<input type="search" name="q" value="{e(query)}" placeholder="Filter by name, file, project"'
        ' aria-label="Filter tests"><button type="submit">Filter</button></form>'
    )
    out = [f'<h2>Tests</h2><nav class="tabs" aria-label="Test status">{tabs}{search}</nav>']
    if not listed["named"]:
        out.append(
            '<p class="muted">The run\'s answer names no tests yet'
            + (" (it is not finished)." if not data["test_run"]["finished"] else ".")
            + "</p>"
        )
        return "".join(out)
    if not listed["complete"]:
        out.append(
            f'<p class="warn">Only the first {e(len(tests["failed"]) + len(tests["snoozed"]))} failed tests '
            f"of {e(listed.get('failed_rows'))} are listed here; every one is in Empirical.</p>"
        )
    rows, matching, page, pages = views.select_tests(tests, status, query, page)
    if not rows:
        out.append(f'<p class="muted">No {e(labels[status].lower())} tests{" match" if query else ""}.</p>')
        return "".join(out)
    body = []
    for row in rows:
        kind = row["kind"]
        css = {"failed": "bad", "snoozed": "snz", "flaky": "warn"}[kind]
        snooze = row.get("snooze") or {}
        detail = ""
        if kind == "snoozed":
            bits = []
            if snooze.get("until"):
                bits.append(f"until {snooze['until']}")
            if snooze.get("description"):
                bits.append(str(snooze["description"]))
            if not bits and snooze.get("id") is not None:
                bits.append(f"snooze {snooze['id']}")
            detail = " · ".join(bits)
        body.append(
            f'<tr><td class="name">{out_link(row.get("url"), row["name"])}</td>'
            f"<td>{e(row.get('file'))}</td><td>{e(row.get('project'))}</td>"
            f'<td><span class="badge {css}">{e(kind)}</span></td><td>{e(detail)}</td></tr>'
        )
    out.append(
        "<table><thead><tr><th>Test</th><th>File</th><th>Project</th><th>Status</th>"
        f"<th>Snoozed (until, why)</th></tr></thead><tbody>{''.join(body)}</tbody></table>"
    )
    if pages > 1:
        prev = (
            f'<a href="{e(_query(status=status, q=query, page=page - 1, **keep))}">&larr; previous</a>'
            if page > 1
            else ""
        )
        nxt = (
            f'<a href="{e(_query(status=status, q=query, page=page + 1, **keep))}">next &rarr;</a>'
            if page < pages
            else ""
        )
        out.append(f'<div class="pager">{prev} page {page} of {pages} ({matching} tests) {nxt}</div>')
    return "".join(out)


# -- the project page ------------------------------------------------------------------------------


def chart(pass_rate: Mapping[str, Any]) -> str:
    """The daily pass rate as an inline SVG bar chart (a gap for a day without finished runs)."""
    days: Sequence[Mapping[str, Any]] = pass_rate.get("days") or []
    width, height, left, bottom = 640, 160, 34, 22
    plot = height - bottom - 8
    step = (width - left - 4) / max(1, len(days))
    bars = []
    for index, day in enumerate(days):
        x = left + index * step
        rate = day.get("rate")
        label = f"{day['date']}: " + (
            f"{rate} % of {day['runs']} runs passed" if rate is not None else "no finished run"
        )
        tip = f"<title>{e(label)}</title>"
        if rate is None:
            bar, color = 2.0, "#a0aec0"
        else:
            bar = max(2.0, plot * rate / 100)
            color = "#38a169" if rate >= 90 else "#d69e2e" if rate >= 60 else "#e53e3e"
        bars.append(
            f'<rect x="{x + 1:.1f}" y="{8 + plot - bar:.1f}" width="{max(1.0, step - 2):.1f}" '
            f'height="{bar:.1f}" fill="{color}">{tip}</rect>'
        )
    axis = "".join(
        f'<text x="{left - 4}" y="{8 + plot - plot * value / 100 + 3:.1f}" text-anchor="end">{value}%</text>'
        f'<line x1="{left}" x2="{width - 4}" y1="{8 + plot - plot * value / 100:.1f}" '
        f'y2="{8 + plot - plot * value / 100:.1f}" stroke="#a0aec0" stroke-width="0.4"/>'
        for value in (0, 50, 100)
    )
    ticks = ""
    if days:
        ticks = (
            f'<text x="{left}" y="{height - 6}">{e(days[0]["date"])}</text>'
            f'<text x="{width - 4}" y="{height - 6}" text-anchor="end">{e(days[-1]["date"])}</text>'
        )
    return (
        f'<svg class="chart" role="img" aria-label="Daily pass rate" viewBox="0 0 {width} {height}" '
        f'width="100%" style="max-width:{width}px">{axis}{"".join(bars)}{ticks}</svg>'
    )


def project_page(data: Mapping[str, Any], nonce: str) -> str:
    title = "Empirical tests"
    if data.get("error"):
        return message_page(title, data["error"], nonce)
    parts = [f"<h1>{e(title)}</h1>"]
    rate = data["pass_rate"]
    summary = rate.get("summary") or {}
    source = "Empirical's analytics" if rate.get("source") == "analytics" else "the run list"
    headline = (
        f"{summary['rate']} % of {summary['runs']} finished runs passed"
        if summary.get("rate") is not None
        else "no finished run"
    )
    parts.append(
        '<div class="card"><h2 style="margin-top:0">'
        f"Pass rate, last {views.PASS_RATE_DAYS} days: {e(headline)}</h2>"
        f'{chart(rate)}<div class="note">From {e(source)}; a run passes when it ended with no failure left '
        "after snoozing.</div></div>"
    )
    project = data.get("project")
    parts.append(
        '<div class="links">'
        + out_link(
            data.get("dashboard"), f"Open project {project} in Empirical" if project else "Open Empirical"
        )
        + "</div>"
    )
    for environment in data.get("environments") or []:
        parts.append(
            f'<h2>{e(environment["name"])} <span class="muted">({e(environment["slug"])})</span></h2>'
        )
        if environment.get("error"):
            parts.append(f'<p class="warn">{e(environment["error"])}</p>')
        runs = environment.get("runs") or []
        if not runs:
            parts.append('<p class="muted">No run in the last 30 days.</p>')
            continue
        rows = []
        for run in runs:
            failed = run["failed_counting"] if run["failed_counting"] is not None else run["failed"]
            counts = f"{_count(run['total'])} tests, {_count(failed)} failed"
            if run.get("flaky"):
                counts += f", {e(run['flaky'])} flaky"
            rows.append(
                f"<tr><td>{out_link(run.get('url'), '#' + str(run['id']))}</td>"
                f"<td>{e(run.get('created_at'))}</td>"
                f"<td>{_verdict_badge(run.get('outcome'), run.get('passes'))}</td>"
                f"<td>{counts}</td><td>{e(run.get('duration'))}</td>"
                f"<td>{e(run.get('branch'))}</td><td>{e(run.get('commit'))}</td></tr>"
            )
        parts.append(
            "<table><thead><tr><th>Run</th><th>Created</th><th>Verdict</th><th>Tests</th><th>Duration</th>"
            f"<th>Branch</th><th>Commit</th></tr></thead><tbody>{''.join(rows)}</tbody></table>"
        )
    for note in data.get("notes") or []:
        parts.append(f'<div class="note">{e(note)}</div>')
    parts.append(
        f'<div class="note">Connection {e(data.get("connection"))}; as of {_when(data.get("fetched_at"))}'
        f"{' (from memory, refreshed at most once a minute)' if data.get('cached') else ''}.</div>"
    )
    return document(title, "".join(parts), nonce)
