"""The report's document model: one block list rendered to Markdown and to self-contained HTML.

Both documents come from the same :class:`Doc`, so Markdown and HTML never disagree.
"""

from __future__ import annotations

import base64
import html
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class Doc:
    """Blocks of a report; ``**bold**`` and ``code`` spans are allowed in text."""

    blocks: list[tuple[Any, ...]] = field(default_factory=list)

    def h(self, level: int, text: str) -> None:
        """Heading."""
        self.blocks.append(("h", level, text))

    def p(self, text: str, cls: str = "") -> None:
        """Paragraph (``cls``: ``headline``, ``warn``, ``note`` styles in HTML)."""
        self.blocks.append(("p", text, cls))

    def ul(self, items: list[str]) -> None:
        """Bullet list."""
        self.blocks.append(("ul", items))

    def table(self, header: list[str], rows: list[list[str]], caption: str = "") -> None:
        """Table of already formatted cells (first column left-aligned, others right-aligned)."""
        self.blocks.append(("table", header, rows, caption))

    def img(self, path: Path, caption: str) -> None:
        """Figure (``path`` relative to the experiment directory)."""
        self.blocks.append(("img", path, caption))


def _html_inline(text: str) -> str:
    out = html.escape(text)
    out = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", out)
    out = re.sub(r"`(.+?)`", r"<code>\1</code>", out)
    return out


def render_markdown(doc: Doc) -> str:
    """Markdown text of ``doc`` (images as relative links to ``plots/``)."""
    lines: list[str] = []
    for b in doc.blocks:
        kind = b[0]
        if kind == "h":
            lines += ["#" * b[1] + " " + b[2], ""]
        elif kind == "p":
            text = b[1]
            if b[2] in ("warn", "headline"):
                text = "> " + text
            lines += [text, ""]
        elif kind == "ul":
            lines += [f"- {item}" for item in b[1]] + [""]
        elif kind == "table":
            header, rows, caption = b[1], b[2], b[3]
            if caption:
                lines += [f"*{caption}*", ""]
            lines.append("| " + " | ".join(header) + " |")
            lines.append("|" + "|".join([":---"] + ["---:"] * (len(header) - 1)) + "|")
            lines += ["| " + " | ".join(c.replace("|", "\\|") for c in r) + " |" for r in rows]
            lines.append("")
        elif kind == "img":
            lines += [f"![{b[2]}]({b[1].as_posix()})", "", f"*{b[2]}*", ""]
    return "\n".join(lines).rstrip() + "\n"


_CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;max-width:1100px;margin:2em auto;
padding:0 1em;color:#1d1d1f;line-height:1.45}
h1{font-size:1.7em;margin-bottom:.2em}h2{margin-top:1.8em;border-bottom:1px solid #ddd;padding-bottom:.2em}
table{border-collapse:collapse;margin:.6em 0 1.2em;font-size:.9em}
th,td{border:1px solid #d0d0d0;padding:.3em .6em;text-align:right}
th:first-child,td:first-child{text-align:left}th{background:#f3f3f3}
tr:nth-child(even) td{background:#fafafa}
.headline{font-size:1.15em;background:#eef6ee;border-left:5px solid #2e7d32;padding:.7em 1em}
.warn{background:#fff4e5;border-left:5px solid #e65100;padding:.6em 1em;font-weight:600}
.note{color:#555;font-size:.92em}
figure{margin:1em 0}figure img{max-width:100%;border:1px solid #eee}
figcaption{color:#555;font-size:.9em}.caption{color:#555;font-size:.9em;margin-bottom:.2em}
code{background:#f4f4f4;padding:0 .2em;border-radius:3px}
"""


def render_html(doc: Doc, base: Path, title: str) -> str:
    """Self-contained HTML of ``doc``: inline CSS, PNGs embedded as base64 data URIs, no external assets."""
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>",
    ]
    for b in doc.blocks:
        kind = b[0]
        if kind == "h":
            parts.append(f"<h{b[1]}>{_html_inline(b[2])}</h{b[1]}>")
        elif kind == "p":
            cls = f' class="{b[2]}"' if b[2] else ""
            parts.append(f"<p{cls}>{_html_inline(b[1])}</p>")
        elif kind == "ul":
            parts.append("<ul>" + "".join(f"<li>{_html_inline(i)}</li>" for i in b[1]) + "</ul>")
        elif kind == "table":
            header, rows, caption = b[1], b[2], b[3]
            if caption:
                parts.append(f'<div class="caption">{_html_inline(caption)}</div>')
            parts.append(
                "<table><thead><tr>"
                + "".join(f"<th>{_html_inline(h)}</th>" for h in header)
                + "</tr></thead>"
            )
            parts.append(
                "<tbody>"
                + "".join("<tr>" + "".join(f"<td>{_html_inline(c)}</td>" for c in r) + "</tr>" for r in rows)
                + "</tbody></table>"
            )
        elif kind == "img":
            data = base64.b64encode((base / b[1]).read_bytes()).decode("ascii")
            parts.append(
                f'<figure><img alt="{html.escape(b[2])}" src="data:image/png;base64,{data}">'
                f"<figcaption>{_html_inline(b[2])}</figcaption></figure>"
            )
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"
