"""The bibliography labelled as the text cites: author–year, not numbers.

The chapters cite with ``bibtex_reference_style: author_year`` ("Ioffe and Szegedy (2015)"),
but pybtex's ``plain`` style labels the bibliography ``[1]``, ``[2]``, … so a reader cannot find
a citation in it. This registers a pybtex style ``author_year``: entries sorted by author, year
and title, each labelled "Ioffe & Szegedy 2015" (one or two authors) or "Santurkar et al. 2018"
(three or more), with a, b, … added where two entries would share a label. ``_config.yml`` sets
``bibtex_default_style: author_year``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Any

from pybtex.plugin import register_plugin
from pybtex.richtext import Text
from pybtex.style.formatting.unsrt import Style as UnsrtStyle
from pybtex.style.labels import BaseLabelStyle
from pybtex.style.sorting.author_year_title import SortingStyle
from sphinx.application import Sphinx


def _surname(person: Any) -> str:
    return Text.from_latex(" ".join(person.prelast_names + person.last_names)).render_as("text")


def author_year(entry: Any) -> str:
    """``Ioffe & Szegedy 2015``, ``Santurkar et al. 2018``, ``He 2016`` for one entry."""
    persons = entry.persons.get("author") or entry.persons.get("editor") or []
    names = [_surname(p) for p in persons]
    if not names:
        who = entry.fields.get("organization") or entry.fields.get("title", entry.key)
        names = [Text.from_latex(str(who)).render_as("text")]
    who = names[0] if len(names) == 1 else (
        f"{names[0]} & {names[1]}" if len(names) == 2 else f"{names[0]} et al.")
    return f"{who} {entry.fields.get('year', 'n.d.')}"


class AuthorYearLabels(BaseLabelStyle):
    """Author–year labels, with a, b, … where two entries would share one."""

    def format_labels(self, sorted_entries: Any) -> Iterator[str]:
        """One label per entry, in the order given."""
        entries = list(sorted_entries)
        labels = [author_year(e) for e in entries]
        repeated, seen = Counter(labels), Counter()
        for label in labels:
            if repeated[label] > 1:
                seen[label] += 1
                yield f"{label}{chr(ord('a') + seen[label] - 1)}"
            else:
                yield label


class AuthorYearStyle(UnsrtStyle):
    """pybtex's ``unsrt`` entries, sorted by author, year and title, labelled author–year."""

    default_label_style = AuthorYearLabels
    default_sorting_style = SortingStyle


def setup(app: Sphinx) -> dict[str, Any]:
    """Register the ``author_year`` style with pybtex."""
    register_plugin("pybtex.style.labels", "author_year", AuthorYearLabels)
    register_plugin("pybtex.style.formatting", "author_year", AuthorYearStyle)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
