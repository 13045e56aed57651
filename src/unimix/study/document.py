"""A small document model: the report is built once as blocks, then rendered to Markdown and HTML.

Blocks: :class:`Heading`, :class:`Paragraph` (``**bold**`` and ``` `code` ``` inline marks),
:class:`Bullets` (items with optional sub-items), :class:`Table` (optional bold cells) and
:class:`Figure` (a PNG next to the report; embedded as base64 in HTML). Both renderers print
every cell's text unchanged, so the two documents carry the same numbers.
"""

from __future__ import annotations

import base64
import html
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["Block", "Bullets", "Figure", "Heading", "Paragraph", "Table", "to_html", "to_markdown"]


@dataclass
class Heading:
    """A section heading of ``level`` 1–6."""

    text: str
    level: int = 2


@dataclass
class Paragraph:
    """A paragraph; ``**bold**`` and ``` `code` ``` are its inline marks."""

    text: str


@dataclass
class Bullets:
    """A bulleted list: each item a text and its (possibly empty) list of sub-items."""

    items: list[tuple[str, list[str]]]


@dataclass
class Table:
    """A table: header, rows of cell texts, optional bold cells and a note printed under it."""

    header: list[str]
    rows: list[list[str]]
    bold: list[list[bool]] | None = None
    note: str = ""


@dataclass
class Figure:
    """A PNG figure next to the report, with its caption (embedded as base64 in HTML)."""

    path: str  # relative to the report
    caption: str


#: Any block of a document.
Block = Heading | Paragraph | Bullets | Table | Figure


@dataclass
class Document:
    title: str
    blocks: list[Block] = field(default_factory=list)


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|")


def to_markdown(doc: Document) -> str:
    """The document as GitHub-flavoured Markdown."""
    out = [f"# {doc.title}", ""]
    for b in doc.blocks:
        if isinstance(b, Heading):
            out += ["#" * b.level + " " + b.text, ""]
        elif isinstance(b, Paragraph):
            out += [b.text, ""]
        elif isinstance(b, Bullets):
            for item, subs in b.items:
                out.append(f"- {item}")
                out += [f"  - {s}" for s in subs]
            out.append("")
        elif isinstance(b, Table):
            out.append("| " + " | ".join(_md_cell(h) for h in b.header) + " |")
            out.append("|" + "---|" * len(b.header))
            for i, row in enumerate(b.rows):
                cells = [
                    f"**{_md_cell(c)}**" if b.bold and b.bold[i][j] else _md_cell(c)
                    for j, c in enumerate(row)
                ]
                out.append("| " + " | ".join(cells) + " |")
            out.append("")
            if b.note:
                out += [b.note, ""]
        elif isinstance(b, Figure):
            out += [f"![{b.caption}]({b.path})", "", f"*{b.caption}*", ""]
    return "\n".join(out).rstrip() + "\n"


def _inline(text: str) -> str:
    text = html.escape(text)
    text = re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", text)
    return re.sub(r"`(.+?)`", r"<code>\1</code>", text)


def to_html(doc: Document, base: Path | None = None) -> str:
    """The document as one self-contained HTML page (figures read from ``base`` and embedded)."""
    body = [f"<h1>{html.escape(doc.title)}</h1>"]
    for b in doc.blocks:
        if isinstance(b, Heading):
            body.append(f"<h{b.level}>{_inline(b.text)}</h{b.level}>")
        elif isinstance(b, Paragraph):
            body.append(f"<p>{_inline(b.text)}</p>")
        elif isinstance(b, Bullets):
            items = []
            for item, subs in b.items:
                inner = "".join(f"<li>{_inline(s)}</li>" for s in subs)
                items.append(
                    f"<li>{_inline(item)}" + (f"<ul>{inner}</ul>" if subs else "") + "</li>"
                )
            body.append("<ul>" + "".join(items) + "</ul>")
        elif isinstance(b, Table):
            body.append(_html_table(b.header, b.rows, b.bold))
            if b.note:
                body.append(f"<p>{_inline(b.note)}</p>")
        elif isinstance(b, Figure):
            src = b.path
            if base is not None and (base / b.path).is_file():
                data = base64.b64encode((base / b.path).read_bytes()).decode("ascii")
                src = f"data:image/png;base64,{data}"
            body.append(
                f'<figure><img src="{src}" alt="{html.escape(b.caption)}">'
                f"<figcaption>{_inline(b.caption)}</figcaption></figure>"
            )
    return (
        "<!DOCTYPE html><html><head><meta charset='utf-8'>"
        f"<title>{html.escape(doc.title)}</title><style>"
        "body{font-family:sans-serif;max-width:1200px;margin:2em auto;padding:0 1em}"
        "table{border-collapse:collapse;font-size:0.85em}td,th{border:1px solid #ccc;padding:3px 6px;"
        "text-align:right}td:first-child,th:first-child{text-align:left}img{max-width:100%}"
        "figcaption{font-style:italic;color:#555}</style></head><body>"
        + "\n".join(body)
        + "</body></html>\n"
    )


def _html_table(
    header: Sequence[str], rows: Sequence[Sequence[str]], bold: Sequence[Sequence[bool]] | None
) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = []
    for i, row in enumerate(rows):
        cells = "".join(
            f"<td><b>{html.escape(c)}</b></td>"
            if bold and bold[i][j]
            else f"<td>{html.escape(c)}</td>"
            for j, c in enumerate(row)
        )
        body.append(f"<tr>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"
