"""A small document model rendered twice: Markdown (images linked) and self-contained HTML.

Building the report once as blocks (paragraphs, tables, images, code) and rendering each
block in both formats keeps ``report.md`` and ``report.html`` saying exactly the same thing.
All text is escaped for HTML here, in one place, so a Reddit comment quoted as an example can
never inject markup into the page.
"""

from __future__ import annotations

import base64
import html
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Union


@dataclass(frozen=True)
class Link:
    text: str
    href: str


@dataclass(frozen=True)
class Mark:
    """A word highlighted by a signed weight in [-1, 1] (an explanation's attribution, scaled by the largest).

    HTML: a green (positive) or red (negative) background as strong as the weight, the number
    in its title. Markdown has no colours: a strong positive word is bold, a strong negative
    one italic.
    """

    text: str
    weight: float
    title: str = ""


Inline = Union[str, Link, Mark]
MARK_SHOWN_FROM = 0.15  # weaker marks are plain text
_MARK_RGB = {True: (46, 160, 67), False: (209, 73, 91)}


@dataclass
class Paragraph:
    parts: Sequence[Inline]
    note: bool = False  # rendered smaller/italic in HTML, as a blockquote-free note in Markdown


@dataclass
class Bullets:
    items: Sequence[Sequence[Inline] | str]


@dataclass
class Table:
    """Cells may be str, int, float or None (shown as "n/a"); floats get ``digits`` decimals."""

    headers: Sequence[str]
    rows: Sequence[Sequence[Any]]
    align: str | None = None  # one "l"/"r" per column; default: first left, others right
    caption: str = ""
    digits: int = 3
    bold_rows: frozenset[int] = frozenset()

    def cell(self, value: Any) -> str:
        if value is None:
            return "n/a"
        if isinstance(value, bool):
            return "yes" if value else "no"
        if isinstance(value, int):
            return f"{value:,}"
        if isinstance(value, float):
            return f"{value:.{self.digits}f}"
        return str(value)

    def aligns(self) -> str:
        return self.align or "l" + "r" * (len(self.headers) - 1)


@dataclass
class Image:
    src: str  # path relative to the report, used by the Markdown version
    png: bytes  # embedded as a data: URI in the HTML version
    alt: str
    caption: str = ""


@dataclass
class Code:
    text: str
    summary: str = ""  # HTML: collapsed under this summary when given


@dataclass
class Section:
    title: str
    blocks: list[Any] = field(default_factory=list)

    @property
    def anchor(self) -> str:
        return re.sub(r"[^a-z0-9]+", "-", self.title.lower()).strip("-")


@dataclass
class Document:
    title: str
    intro: list[Any]
    sections: list[Section]


# --------------------------------------------------------------------------- Markdown


def _md_inline(parts: Sequence[Inline] | str) -> str:
    if isinstance(parts, str):
        return parts
    out = []
    for p in parts:
        if isinstance(p, Link):
            out.append(f"[{p.text}]({p.href})")
        elif isinstance(p, Mark):
            strong = abs(p.weight) >= 0.5 and p.text.strip()
            out.append((f"**{p.text}**" if p.weight > 0 else f"_{p.text}_") if strong else p.text)
        else:
            out.append(p)
    return "".join(out)


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _md_block(block: Any) -> str:
    if isinstance(block, Paragraph):
        text = _md_inline(block.parts)
        return f"*{text}*" if block.note else text
    if isinstance(block, Bullets):
        return "\n".join(f"- {_md_inline(item)}" for item in block.items)
    if isinstance(block, Table):
        aligns = block.aligns()
        lines = [
            "| " + " | ".join(_md_cell(h) for h in block.headers) + " |",
            "|" + "|".join("---:" if a == "r" else "---" for a in aligns) + "|",
        ]
        for i, row in enumerate(block.rows):
            cells = [_md_cell(block.cell(v)) for v in row]
            if i in block.bold_rows:
                cells = [f"**{c}**" if c else c for c in cells]
            lines.append("| " + " | ".join(cells) + " |")
        text = "\n".join(lines)
        return f"{text}\n\n*{block.caption}*" if block.caption else text
    if isinstance(block, Image):
        text = f"![{block.alt}]({block.src})"
        return f"{text}\n\n*{block.caption}*" if block.caption else text
    if isinstance(block, Code):
        return f"```yaml\n{block.text.rstrip()}\n```"
    raise TypeError(f"unknown block {type(block).__name__}")


def to_markdown(doc: Document) -> str:
    """The document as GitHub-flavoured Markdown; images are linked (``plots/*.png``)."""
    parts = [f"# {doc.title}", *(_md_block(b) for b in doc.intro)]
    parts.append("Contents: " + " · ".join(f"[{s.title}](#{s.anchor})" for s in doc.sections))
    for section in doc.sections:
        parts.append(f"## {section.title}")
        parts.extend(_md_block(b) for b in section.blocks)
    return "\n\n".join(parts) + "\n"


# --------------------------------------------------------------------------- HTML

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;max-width:1100px;margin:2em auto;
padding:0 1em;color:#222;line-height:1.45}
h1{font-size:1.6em;margin-bottom:.2em}h2{margin-top:2em;border-bottom:1px solid #ddd;padding-bottom:.2em}
table{border-collapse:collapse;margin:.8em 0;font-size:.88em}
th,td{border:1px solid #ddd;padding:3px 8px}th{background:#f4f4f4;position:sticky;top:0}
td.r,th.r{text-align:right;font-variant-numeric:tabular-nums}tr.b td{font-weight:600;background:#fafafa}
figure{margin:1em 0}figure img{max-width:100%;height:auto;border:1px solid #eee}
figcaption,.caption{font-size:.85em;color:#555}p.note{font-size:.88em;color:#555;font-style:italic}
nav a{margin-right:.8em}pre{background:#f6f8fa;padding:.8em;overflow-x:auto;font-size:.85em}
mark{color:inherit;border-radius:3px;padding:0 1px}
"""


def _html_inline(parts: Sequence[Inline] | str) -> str:
    if isinstance(parts, str):
        return html.escape(parts)
    out = []
    for p in parts:
        if isinstance(p, Link):
            out.append(f'<a href="{html.escape(p.href, quote=True)}">{html.escape(p.text)}</a>')
        elif isinstance(p, Mark):
            out.append(_html_mark(p))
        else:
            out.append(html.escape(p))
    return "".join(out)


def _html_mark(mark: Mark) -> str:
    weight = max(-1.0, min(1.0, float(mark.weight)))
    title = f' title="{html.escape(mark.title, quote=True)}"' if mark.title else ""
    if abs(weight) < MARK_SHOWN_FROM:
        return f"<span{title}>{html.escape(mark.text)}</span>" if title else html.escape(mark.text)
    r, g, b = _MARK_RGB[weight > 0]
    cls = "pos" if weight > 0 else "neg"
    style = f"background:rgba({r},{g},{b},{0.2 + 0.6 * abs(weight):.2f})"
    return f'<mark class="{cls}" style="{style}"{title}>{html.escape(mark.text)}</mark>'


def _html_block(block: Any) -> str:
    if isinstance(block, Paragraph):
        cls = ' class="note"' if block.note else ""
        return f"<p{cls}>{_html_inline(block.parts)}</p>"
    if isinstance(block, Bullets):
        return "<ul>" + "".join(f"<li>{_html_inline(item)}</li>" for item in block.items) + "</ul>"
    if isinstance(block, Table):
        aligns = block.aligns()
        head = "".join(f'<th class="{a}">{html.escape(h)}</th>' for h, a in zip(block.headers, aligns))
        body = []
        for i, row in enumerate(block.rows):
            cls = ' class="b"' if i in block.bold_rows else ""
            cells = "".join(f'<td class="{a}">{html.escape(block.cell(v))}</td>' for v, a in zip(row, aligns))
            body.append(f"<tr{cls}>{cells}</tr>")
        caption = f'<div class="caption">{html.escape(block.caption)}</div>' if block.caption else ""
        return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>{caption}"
    if isinstance(block, Image):
        data = base64.b64encode(block.png).decode("ascii")
        caption = f"<figcaption>{html.escape(block.caption)}</figcaption>" if block.caption else ""
        return f'<figure><img alt="{html.escape(block.alt, quote=True)}" src="data:image/png;base64,{data}">{caption}</figure>'
    if isinstance(block, Code):
        pre = f"<pre>{html.escape(block.text.rstrip())}</pre>"
        return f"<details><summary>{html.escape(block.summary)}</summary>{pre}</details>" if block.summary else pre
    raise TypeError(f"unknown block {type(block).__name__}")


def to_html(doc: Document) -> str:
    """One self-contained page: inline CSS, images as base64 data URIs, no scripts, no fetches."""
    nav = "".join(f'<a href="#{s.anchor}">{html.escape(s.title)}</a>' for s in doc.sections)
    out = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{html.escape(doc.title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{html.escape(doc.title)}</h1>",
        *(_html_block(b) for b in doc.intro),
        f"<nav>{nav}</nav>",
    ]
    for section in doc.sections:
        out.append(f'<section id="{section.anchor}"><h2>{html.escape(section.title)}</h2>')
        out.extend(_html_block(b) for b in section.blocks)
        out.append("</section>")
    out.append("</body></html>")
    return "\n".join(out) + "\n"
