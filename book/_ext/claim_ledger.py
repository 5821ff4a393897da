"""The ledger of claims: every check of every chapter in one table, each linked to its cell.

In a notebook the checks of a cell (``bncore.book.claims``) are shown as one ``<details
class="bncore-claims">`` display output whose ``data-ledger`` attribute holds the records as
JSON (claim, measured, required, tolerance, why). They are part of the executed notebook, so the
ledger comes from the very execution the page renders, cached ones included; nothing is written
beside the build.

- ``doctree-read``: each page's claim outputs are found in its doctree (raw HTML nodes), the
  cell that holds one gets an anchor (``claim-cell-N``), and the records are stored in the
  build environment with the page and the section they sit in.
- ``{claim-ledger}``: a directive that leaves a placeholder; at ``doctree-resolved``, when every
  page has been read, the placeholder becomes one table per chapter (in the order of the book):
  section, claim (linked to its cell), measured, required, and where the tolerance comes from.
- The page with the directive is re-resolved on every build, since any chapter can change it.
"""

from __future__ import annotations

import html
import json
import re
from typing import Any

from docutils import nodes
from sphinx.application import Sphinx
from sphinx.environment import BuildEnvironment
from sphinx.util.docutils import SphinxDirective

_DATA = re.compile(r'<details class="bncore-claims" data-ledger="([^"]*)"')
COLUMNS = ("Section", "Claim", "Measured", "Required", "Tolerance from")


class ledger_placeholder(nodes.General, nodes.Element):
    """Replaced by the ledger's tables once every page has been read."""


class ClaimLedger(SphinxDirective):
    """``{claim-ledger}``: the table of every checked claim in the book."""

    def run(self) -> list[nodes.Node]:
        """A placeholder, and a note that this page shows the ledger."""
        self.env.bncore_ledger_pages = getattr(self.env, "bncore_ledger_pages", set())
        self.env.bncore_ledger_pages.add(self.env.docname)
        return [ledger_placeholder()]


def _section_title(node: nodes.Node) -> str:
    while node is not None and not isinstance(node, nodes.section):
        node = node.parent
    if node is None:
        return ""
    title = next(iter(node.findall(nodes.title)), None)
    return title.astext() if title is not None else ""


def _cell(node: nodes.Node) -> nodes.Element | None:
    while node is not None:
        if isinstance(node, nodes.container) and node.get("nb_element") == "cell_code":
            return node
        node = node.parent
    return None


def collect_claims(app: Sphinx, doctree: nodes.document) -> None:
    """Store the claim records of the page just read, each with its section and cell anchor."""
    env = app.env
    claims: dict[str, list[dict[str, Any]]] = getattr(env, "bncore_claims", {})
    env.bncore_claims = claims
    found: list[dict[str, Any]] = []
    for raw in doctree.findall(nodes.raw):
        match = _DATA.search(raw.astext())
        if not match:
            continue
        cell = _cell(raw) or raw.parent
        anchor = f"claim-cell-{len(found)}"
        if not cell["ids"] or not any(i.startswith("claim-cell-") for i in cell["ids"]):
            cell["ids"].append(anchor)
        else:
            anchor = next(i for i in cell["ids"] if i.startswith("claim-cell-"))
        section = _section_title(raw)
        for record in json.loads(html.unescape(match.group(1))):
            found.append({**record, "section": section, "anchor": anchor})
    if found:
        claims[env.docname] = found
    else:
        claims.pop(env.docname, None)


def purge(app: Sphinx, env: BuildEnvironment, docname: str) -> None:
    """Forget what a page that is read again had recorded."""
    getattr(env, "bncore_claims", {}).pop(docname, None)
    getattr(env, "bncore_ledger_pages", set()).discard(docname)


def merge(app: Sphinx, env: BuildEnvironment, docnames: set[str], other: BuildEnvironment) -> None:
    """Combine the records of parallel readers."""
    claims = getattr(env, "bncore_claims", {})
    env.bncore_claims = {**claims, **getattr(other, "bncore_claims", {})}
    env.bncore_ledger_pages = getattr(env, "bncore_ledger_pages", set()) | getattr(
        other, "bncore_ledger_pages", set()
    )


def always_outdated(
    app: Sphinx, env: BuildEnvironment, added: set[str], changed: set[str], removed: set[str]
) -> list[str]:
    """The ledger page, resolved again on every build: any chapter may have changed."""
    return sorted(getattr(env, "bncore_ledger_pages", set()) - removed)


def _order(env: BuildEnvironment, docname: str) -> tuple[tuple[int, ...], str]:
    return (tuple(env.toc_secnumbers.get(docname, {}).get("", ())) or (10**6,), docname)


def _row(cells: list[nodes.Node]) -> nodes.row:
    row = nodes.row()
    for content in cells:
        entry = nodes.entry()
        entry += content
        row += entry
    return row


def _table(app: Sphinx, fromdocname: str, docname: str, records: list[dict[str, Any]]):
    table = nodes.table(classes=["claim-ledger"])
    group = nodes.tgroup(cols=len(COLUMNS))
    table += group
    group.extend(nodes.colspec(colwidth=w) for w in (14, 30, 20, 20, 16))
    head = nodes.thead()
    head += _row([nodes.paragraph(text=c) for c in COLUMNS])
    group += head
    body = nodes.tbody()
    uri = app.builder.get_relative_uri(fromdocname, docname)
    for r in records:
        link = nodes.reference("", r["claim"], internal=True, refuri=f"{uri}#{r['anchor']}")
        body += _row([
            nodes.paragraph(text=r["section"]),
            nodes.paragraph("", "", link),
            nodes.paragraph(text=r["measured"]),
            nodes.paragraph(text=r["required"]),
            nodes.paragraph(text=r["why"]),
        ])
    group += body
    return table


def resolve_ledger(app: Sphinx, doctree: nodes.document, fromdocname: str) -> None:
    """Replace the placeholder by one table per chapter, in the order of the book."""
    env = app.env
    claims = getattr(env, "bncore_claims", {})
    for placeholder in list(doctree.findall(ledger_placeholder)):
        content: list[nodes.Node] = []
        total = sum(len(r) for r in claims.values())
        content.append(nodes.paragraph(
            text=f"{total} checked claims in {len(claims)} "
            f"{'chapter' if len(claims) == 1 else 'chapters'}, as this build ran them."
        ))
        for docname in sorted(claims, key=lambda d: _order(env, d)):
            number = ".".join(map(str, env.toc_secnumbers.get(docname, {}).get("", ())))
            title = env.titles[docname].astext()
            content.append(nodes.rubric(text=f"{number} {title}".strip()))
            content.append(_table(app, fromdocname, docname, claims[docname]))
        placeholder.replace_self(content)


def _skip(self: Any, node: nodes.Node) -> None:
    raise nodes.SkipNode


def setup(app: Sphinx) -> dict[str, Any]:
    """Register the directive, its node and the event handlers."""
    app.add_node(ledger_placeholder, html=(_skip, None), latex=(_skip, None),
                 text=(_skip, None))
    app.add_directive("claim-ledger", ClaimLedger)
    app.connect("doctree-read", collect_claims)
    app.connect("env-purge-doc", purge)
    app.connect("env-merge-info", merge)
    app.connect("env-get-outdated", always_outdated)
    app.connect("doctree-resolved", resolve_ledger)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
