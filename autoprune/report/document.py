"""One report, two renderings: a list of blocks → Markdown (``report.md``) and HTML
(``report.html``, self-contained: CSS inline, figures as base64 PNG, no external assets).

Inline markup in texts: ``**bold**`` and ```code``` only (rendered in both formats).
"""

from __future__ import annotations

import base64
import html
import re
from collections.abc import Sequence
from typing import NamedTuple, Union

__all__ = ["Heading", "Para", "Callout", "Facts", "Table", "Image", "Bullets", "Block", "to_markdown", "to_html"]


class Heading(NamedTuple):
    level: int
    text: str


class Para(NamedTuple):
    text: str


class Callout(NamedTuple):
    text: str
    kind: str = "note"  # "note" or "warning"


class Facts(NamedTuple):
    pairs: tuple[tuple[str, str], ...]


class Table(NamedTuple):
    columns: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    align: str = ""  # one letter per column, "l" or "r" (default l)


class Image(NamedTuple):
    path: str  # relative to the report, for Markdown
    alt: str
    png: bytes  # embedded in HTML
    caption: str = ""


class Bullets(NamedTuple):
    items: tuple[str, ...]


Block = Union[Heading, Para, Callout, Facts, Table, Image, Bullets]


# ---------------------------------------------------------------- Markdown
def _md_cell(s: str) -> str:
    return str(s).replace("|", "\\|").replace("\n", " ")


def _md_table(columns, rows, align) -> list[str]:
    sep = ["---:" if (align[i:i + 1] == "r") else "---" for i in range(len(columns))]
    out = ["| " + " | ".join(_md_cell(c) for c in columns) + " |", "| " + " | ".join(sep) + " |"]
    out += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in rows]
    return out


def to_markdown(blocks: Sequence[Block]) -> str:
    lines: list[str] = []
    for b in blocks:
        if isinstance(b, Heading):
            lines += ["#" * b.level + " " + b.text, ""]
        elif isinstance(b, Para):
            lines += [b.text, ""]
        elif isinstance(b, Callout):
            prefix = "**Warning:** " if b.kind == "warning" else "**Note:** "
            lines += ["> " + prefix + b.text, ""]
        elif isinstance(b, Facts):
            lines += _md_table(("", ""), [(f"**{k}**", v) for k, v in b.pairs], "") + [""]
        elif isinstance(b, Table):
            lines += _md_table(b.columns, b.rows, b.align) + [""]
        elif isinstance(b, Image):
            lines += [f"![{b.alt}]({b.path})", ""]
            if b.caption:
                lines += [f"*{b.caption}*", ""]
        elif isinstance(b, Bullets):
            lines += [f"- {item}" for item in b.items] + [""]
        else:  # pragma: no cover - a new block type without a renderer is a bug
            raise TypeError(f"no Markdown renderer for {type(b).__name__}")
    return "\n".join(lines).rstrip() + "\n"


# -------------------------------------------------------------------- HTML
_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;margin:2em auto;
max-width:1200px;padding:0 1em;color:#222;line-height:1.45}
h1{font-size:1.6em;border-bottom:2px solid #0072B2;padding-bottom:.2em}h2{font-size:1.25em;margin-top:1.8em}
table{border-collapse:collapse;margin:.6em 0 1.2em;font-size:.9em}
th,td{border:1px solid #ccc;padding:.25em .55em;vertical-align:top}th{background:#f2f5f9;text-align:left}
td.r{text-align:right;font-variant-numeric:tabular-nums}
table.facts td:first-child{font-weight:600;background:#f7f7f7;white-space:nowrap}
.callout{border-left:4px solid #0072B2;background:#eef5fb;padding:.5em .9em;margin:1em 0}
.callout.warning{border-color:#D55E00;background:#fdf0e8}
figure{margin:1em 0}figure img{max-width:100%;height:auto;border:1px solid #eee}
figcaption{font-size:.9em;color:#555;margin-top:.3em}.scroll{overflow-x:auto}
code{background:#f3f3f3;padding:0 .25em;border-radius:3px}
""".strip()


def _inline(text: str) -> str:
    s = html.escape(str(text), quote=False)
    s = re.sub(r"`([^`]+)`", r"<code>\1</code>", s)
    return re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", s)


def _html_table(columns, rows, align, cls="") -> str:
    head = "".join(f"<th>{_inline(c)}</th>" for c in columns)
    body = []
    for row in rows:
        cells = "".join(f'<td class="r">{_inline(c)}</td>' if align[i:i + 1] == "r" else f"<td>{_inline(c)}</td>"
                        for i, c in enumerate(row))
        body.append(f"<tr>{cells}</tr>")
    cls_attr = f' class="{cls}"' if cls else ""
    thead = f"<thead><tr>{head}</tr></thead>" if any(columns) else ""
    return f'<div class="scroll"><table{cls_attr}>{thead}<tbody>{"".join(body)}</tbody></table></div>'


def to_html(blocks: Sequence[Block], *, title: str) -> str:
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             '<meta name="viewport" content="width=device-width, initial-scale=1">',
             f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>"]
    for b in blocks:
        if isinstance(b, Heading):
            parts.append(f"<h{b.level}>{_inline(b.text)}</h{b.level}>")
        elif isinstance(b, Para):
            parts.append(f"<p>{_inline(b.text)}</p>")
        elif isinstance(b, Callout):
            cls = "callout warning" if b.kind == "warning" else "callout"
            parts.append(f'<div class="{cls}">{_inline(b.text)}</div>')
        elif isinstance(b, Facts):
            parts.append(_html_table(("", ""), b.pairs, "", cls="facts"))
        elif isinstance(b, Table):
            parts.append(_html_table(b.columns, b.rows, b.align))
        elif isinstance(b, Image):
            data = base64.b64encode(b.png).decode("ascii")
            cap = f"<figcaption>{_inline(b.caption)}</figcaption>" if b.caption else ""
            parts.append(f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(b.alt)}">{cap}</figure>')
        elif isinstance(b, Bullets):
            parts.append("<ul>" + "".join(f"<li>{_inline(i)}</li>" for i in b.items) + "</ul>")
        else:  # pragma: no cover
            raise TypeError(f"no HTML renderer for {type(b).__name__}")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"
