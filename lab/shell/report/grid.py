"""The verdict grid as HTML and Markdown: models x audits, one state per cell, one sentence per model.

The web lab (verdict dashboard, Results tab) and the reports lay out a
:class:`~lab.shell.report.leaderboard.Leaderboard` with these functions, so a
cell looks the same everywhere: the state word (forgotten, hidden, leaked,
n/a, or the audit's status), the judged number with its 95% interval, and the
rule's reason on hover.  Styles are in ``static/verdict.css`` (the page and the
HTML report both load it); colours come from CSS variables, so dark mode
follows the theme.
"""

from __future__ import annotations

import html
from typing import Callable
from urllib.parse import urlencode

from lab.shell.report.leaderboard import Entry, Leaderboard, gate_line
from lab.shell.report.render import md_text
from lab.shell.verdict import NEGATIVE_NOTE, STATE_MEANING, Cell

Link = Callable[[dict[str, str]], str]  # query parameters -> href (the web lab's links; None in a report file)


def lab_link(params: dict[str, str]) -> str:
    """A link into the web lab that reopens a tab on a run, fact or item (see ``lab.shell.ui.links``)."""
    return "?" + urlencode(params)


def state_badge(state: str) -> str:
    """A state as a coloured word (``hidden``, ``forgotten``...)."""
    css = state.replace(" ", "-").replace("/", "")
    meaning = STATE_MEANING.get(state, "")
    return (f"<span class='vbadge state-{css}' title='{html.escape(meaning)}'>{html.escape(state)}</span>")


def gate_badge(e: Entry) -> str:
    """The gate's word, and on hover why it fails."""
    word, css = ("gate: pass", "pass") if e.passes else ("gate: FAIL", "fail")
    why = html.escape("; ".join(e.gate))
    return f"<span class='vbadge gate-{css}' title='{why}'>{word}</span>"


def cell_html(c: Cell | None) -> str:
    if c is None:
        return "<td class='vcell state-none'>–</td>"
    css = c.state.replace(" ", "-").replace("/", "")
    rate, _, interval = c.text.partition(" ")  # the interval may go under the rate in a narrow column
    number = "" if c.value is None else (f"<span class='vnum'>{html.escape(rate)} "
                                         f"<span class='vci'>{html.escape(interval)}</span></span>")
    title = html.escape(c.reason + (f" ({c.key})" if c.key else "") + (f"; power {c.power}" if c.power else ""))
    value = "" if c.value is None else f" data-value='{c.value:.6f}'"
    return (f"<td class='vcell state-{css}' title='{title}'{value} data-audit='{html.escape(c.audit)}'>"
            f"<span class='vstate'>{html.escape(c.state)}</span>{number}</td>")


def _worst(e: Entry, link: Link | None) -> str:
    if not e.worst:
        what = "no target fact was recovered" if e.targets else "no target facts (nothing to recover)"
        return f"<p class='vnone'>{what}.</p>"
    rows = []
    for r in e.worst:
        by = "; ".join(f"{a} ({', '.join(c)})" if c else a for a, c in r.by.items())
        fact = html.escape(r.fact_id)
        if link:
            fact = f"<a href='{html.escape(link({'tab': 'results', 'run': e.run_id, 'fact': r.fact_id}))}'>{fact}</a>"
        rows.append(f"<tr><td class='mono'>{fact}</td><td><mark class='gold'>{html.escape(r.answer)}</mark></td>"
                    f"<td>{html.escape(by)}</td><td><div class='vout'>{html.escape(r.output_unlearned)}</div></td></tr>")
    return ("<table class='vworst'><thead><tr><th>fact</th><th>gold answer</th><th>recovered by</th>"
            "<th>unlearned output</th></tr></thead><tbody>" + "".join(rows) + "</tbody></table>")


def _fact_count(e: Entry) -> str:
    return f"{len(e.worst)} of {e.targets} targets" if e.targets else "none"


def negative_note(board: Leaderboard) -> str:
    """The sentence that explains a rate below zero beyond the control, when a cell shows one ("" otherwise)."""
    negative = any(c.negative for e in board.entries for c in e.verdict.cells)
    return f"{NEGATIVE_NOTE[0].upper()}{NEGATIVE_NOTE[1:]}." if negative else ""


def grid_html(board: Leaderboard, link: Link | None = None, worst: bool = True) -> str:
    """The grid: a row per model (state per audit), and under it the model's sentence and worst facts."""
    audits = board.audits
    head = "".join(f"<th scope='col'>{html.escape(a)}</th>" for a in audits)
    body = []
    width = len(audits) + 2
    for e in board.entries:
        run = html.escape(e.run_id)
        if link:
            run = f"<a href='{html.escape(link({'tab': 'results', 'run': e.run_id}))}'>{run}</a>"
        cells = "".join(cell_html(e.cell(a)) for a in audits)
        body.append(f"<tr class='vrow' data-model='{html.escape(e.model)}'><th scope='row'>"
                    f"<div class='vmodel'>{html.escape(e.model)}</div><div class='vrun mono'>{run}</div></th>"
                    f"<td class='vverdict'>{state_badge(e.verdict.state)}{gate_badge(e)}</td>{cells}</tr>")
        details = (f"<details class='vdetails'><summary>Worst recovered facts ({_fact_count(e)})</summary>"
                   f"{_worst(e, link)}</details>") if worst else ""
        status = "" if e.status == "complete" else f" <span class='vpartial'>{html.escape(e.status)}</span>"
        body.append(f"<tr class='vsentence'><td colspan='{width}'>{html.escape(e.verdict.sentence)}{status}"
                    f"{details}</td></tr>")
    against = (f"Recovery cells are judged against the control <b>{html.escape(board.control)}</b> (rate minus "
               "the control's, 95% interval)." if board.control else
               "No control model ran: recovery cells are judged on the raw rate (95% interval above chance).")
    against += f" {html.escape(negative_note(board))}"
    legend = " ".join(state_badge(s) + f" {html.escape(m)}" for s, m in STATE_MEANING.items())
    return (f"<div class='vgrid-card'><div class='vgrid-wrap'><table class='vgrid'><thead><tr><th scope='col'>model"
            f"</th><th scope='col'>verdict</th>{head}</tr></thead><tbody>{''.join(body)}</tbody></table></div>"
            f"<p class='vnote'>{against} {html.escape(gate_line(board))}</p><p class='vlegend'>{legend}</p></div>")


def grid_markdown(board: Leaderboard) -> list[str]:
    """The grid as Markdown lines: a table, then each model's sentence."""
    if not board.entries:
        return ["_No runs._"]
    lines = ["| model | verdict | gate | " + " | ".join(board.audits) + " |",
             "|---|---|---|" + "---|" * len(board.audits)]
    for e in board.entries:
        cells = []
        for audit in board.audits:
            c = e.cell(audit)
            cells.append("–" if c is None else (f"{c.state} {c.text}" if c.value is not None else c.state))
        gate = "pass" if e.passes else "FAIL: " + "; ".join(e.gate)
        lines.append(f"| {md_text(e.model)} | {e.verdict.state} | {gate} | " + " | ".join(map(md_text, cells)) + " |")
    lines += [""] + [f"- **{md_text(e.model)}** ({md_text(e.run_id)}): {md_text(e.verdict.sentence)}"
                     for e in board.entries]
    return lines + ["", gate_line(board)] + (["", negative_note(board)] if negative_note(board) else [])

