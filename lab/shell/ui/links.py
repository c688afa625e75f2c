"""Links into the lab: the URL carries the tab, run, sweep, fact and item, and the Results tab's filters, so a
result can be reopened exactly as it was shared.

Reading: on page load, :func:`parse` turns the query (``?tab=results&run=run-…&audit=reasoning&split=forget&
recovered=1&fact=p002&item=37``) into a :class:`Link` and the app opens that place.  ``item`` is the item's
stored id (its place in the run, :func:`lab.shell.ui.results.run_items`), never a row of the filtered list, and
the filters come with it, so a shared item link reopens the same item under any filter.  Writing: events that
move somewhere run a small script in the browser (:func:`params_js`, through :data:`HEAD`'s ``labParams``) that
updates the address bar with ``history.replaceState`` — no reload, nothing sent to the server — so the address
is always the way back; a filter at its default (``all``, unticked, empty) leaves the URL.  The verdict grid's
and the report's links (:func:`lab.shell.report.grid.lab_link`) use the same parameters.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Mapping

TABS = {"models": "Models", "verdicts": "Verdicts", "probe": "Probe", "audit": "Audit", "internals": "Internals",
        "results": "Results", "report": "Report"}  # the URL's tab -> the tab's title
FILTERS = ("audit", "split", "recovered", "fact")  # the Results tab's item filters, in the URL's order
PARAMS = ("tab", "run", "sweep", *FILTERS, "item")
ALL = "all"  # a filter's "no filter" value (the audit and split pickers)

# labParams(names, values): each name set to its value, or removed when the value is empty, false or "all" (a
# filter at its default).  Only once the page has opened the place its link names (OPEN_TAB_JS sets labOpened):
# events that fire while the page opens (a tab's select on mount) must not overwrite the link before the server
# read it.
HEAD = """<script>
window.labOpened = false;
window.labParams = function (names, values) {
  if (!window.labOpened) return;
  const url = new URL(window.location.href);
  names.forEach(function (name, i) {
    const v = values[i];
    if (v === null || v === undefined || v === "" || v === false || v === "ALL" || (Array.isArray(v) && !v.length))
      url.searchParams.delete(name);
    else url.searchParams.set(name, v === true ? "1" : String(v));
  });
  window.history.replaceState(null, "", url);
};
</script>""".replace('"ALL"', f'"{ALL}"')


# After the page opened (and the server filled the run, fact, item or sweep): open the tab the URL names, and
# the leaderboard for a sweep, by clicking them as a user would, once their buttons exist.  On a narrow screen
# Gradio folds tabs into its "More tabs" menu, whose buttons carry no id: those are found by their title.
LEADERBOARD_TITLE = "Leaderboard (sweeps)"
OPEN_TAB_JS = """() => {
  const titles = TITLES;
  const query = new URLSearchParams(window.location.search);
  const clicks = [query.get("tab") && "tab-" + query.get("tab") + "-button",
                  query.get("sweep") && "results-leaderboard-tab-button"].filter(Boolean);
  const find = function (id) {
    return document.getElementById(id) || Array.from(document.querySelectorAll(".overflow-dropdown button"))
      .find(function (b) { return b.textContent.trim() === titles[id]; });
  };
  const next = function (tries) {
    if (!clicks.length || tries > 50) { window.labOpened = true; return; }
    const button = find(clicks[0]);
    if (button) { button.click(); clicks.shift(); }
    setTimeout(function () { next(tries + 1); }, 100);
  };
  next(0);
}""".replace("TITLES", json.dumps({**{f"tab-{key}-button": title for key, title in TABS.items()},
                                   "results-leaderboard-tab-button": LEADERBOARD_TITLE}))


@dataclass(frozen=True)
class Link:
    """A place in the lab, from the URL's query (every field optional)."""

    tab: str | None = None
    run: str | None = None
    sweep: str | None = None
    fact: str | None = None
    item: int | None = None  # the item's stored id in the run
    audit: str | None = None
    split: str | None = None
    recovered: bool = False


def parse(query: Mapping[str, str]) -> Link:
    """The place a URL names; unknown tabs, malformed items and filters left at ``all`` are dropped, never
    errors (a filter naming nothing the run has simply matches nothing)."""
    def text(name: str) -> str | None:
        value = str(query.get(name) or "").strip()
        return value[:200] or None

    def picked(name: str) -> str | None:
        value = text(name)
        return None if value == ALL else value

    tab = text("tab")
    item = text("item")
    return Link(tab=tab if tab in TABS else None, run=text("run"), sweep=text("sweep"), fact=text("fact"),
                item=int(item) if item and item.isdigit() else None, audit=picked("audit"), split=picked("split"),
                recovered=text("recovered") in ("1", "true", "yes"))


def params_js(names: list[str], fixed: Mapping[str, str | None] | None = None) -> str:
    """An event's browser-side ``js``: write its inputs (in the order of ``names``), then ``fixed``, into the URL."""
    fixed = dict(fixed or {})
    keys = json.dumps(list(names) + list(fixed))
    extra = json.dumps(list(fixed.values()))
    return f"(...values) => {{ window.labParams({keys}, values.slice(0, {len(names)}).concat({extra})); }}"
