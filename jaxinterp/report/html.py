"""A self-contained HTML report: sections of text, figures, tables and metrics.

Figures are embedded as base64 data URIs, so ``report.html`` is one standalone
file that can be mailed or archived.  A report is a list of :class:`Section`
objects; code that contributes to a report builds a section and adds it::

    report = Report("Demo")
    sec = report.section("Saliency", "Gradient saliency of the true class.")
    sec.figure("saliency.png", "Synthetic images, box = ground truth.")
    sec.metrics({"accuracy": 0.93})
    report.add(Section("Extra").table([[1, 2.5]], header=["n", "value"]))
    report.write("runs/demo/123")          # -> runs/demo/123/report.html

Every builder method returns its section (or report), so calls chain.
"""

from __future__ import annotations

import base64
import datetime
import html
import io
import mimetypes
import os
from typing import Any, Mapping, Sequence

import numpy as np

from jaxinterp.files import atomic_write

__all__ = ["Report", "Section"]

_CSS = """
body { font-family: system-ui, sans-serif; max-width: 60rem; margin: 2rem auto; padding: 0 1rem; color: #222; }
h1 { border-bottom: 2px solid #444; } h2 { border-bottom: 1px solid #bbb; margin-top: 2rem; }
figure { margin: 1rem 0; } figure img { max-width: 100%; image-rendering: pixelated; }
figcaption { font-size: 0.9rem; color: #444; }
table { border-collapse: collapse; margin: 1rem 0; font-size: 0.9rem; }
th, td { border: 1px solid #ccc; padding: 0.25rem 0.6rem; text-align: left; }
th { background: #f2f2f2; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
.meta { color: #666; font-size: 0.85rem; }
"""


def _format(value: Any) -> str:
    """A table cell: floats to 4 significant digits, everything else by ``str``."""
    if isinstance(value, (float, np.floating)):
        return f"{float(value):.4g}"
    if isinstance(value, np.ndarray) and value.ndim == 0:
        return _format(value.item())
    return str(value)


def _cell(value: Any, tag: str = "td") -> str:
    numeric = isinstance(value, (int, float, np.number)) and not isinstance(value, bool)
    cls = ' class="num"' if numeric and tag == "td" else ""
    return f"<{tag}{cls}>{html.escape(_format(value))}</{tag}>"


def _png_bytes(array) -> bytes:
    """PNG encoding of an image (H, W, 3|4) uint8 / float in [0, 1], or (H, W) grey."""
    from PIL import Image  # matplotlib's own dependency

    a = np.asarray(array)
    if a.dtype != np.uint8:
        a = np.round(np.clip(a, 0.0, 1.0) * 255.0).astype(np.uint8)
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[-1] not in (3, 4)):
        raise ValueError(f"image: expected (H, W), (H, W, 3) or (H, W, 4), got shape {a.shape}")
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="PNG")
    return buf.getvalue()


def _data_uri(image) -> str:
    """A data URI for an image file path or an image array."""
    if isinstance(image, (str, os.PathLike)):
        mime = mimetypes.guess_type(os.fspath(image))[0]
        if mime is None or not mime.startswith("image/"):
            raise ValueError(f"image: expected an image file (.png, .jpg, .svg), got {os.fspath(image)!r}")
        with open(image, "rb") as f:
            data = f.read()
    else:
        mime, data = "image/png", _png_bytes(image)
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


class Section:
    """A titled part of a report: a sequence of text, figure, table and metric blocks.

    Args:
      title: the section heading.
      text: optional first paragraph(s); blank lines separate paragraphs.
    """

    def __init__(self, title: str, text: str | None = None):
        self.title = title
        self.blocks: list[str] = []
        if text:
            self.text(text)

    def text(self, text: str) -> "Section":
        """Add paragraphs of plain text (escaped; blank lines separate paragraphs)."""
        for para in text.strip().split("\n\n"):
            self.blocks.append(f"<p>{html.escape(para.strip())}</p>")
        return self

    def figure(self, image, caption: str = "") -> "Section":
        """Embed an image: a file path (.png, .jpg, .svg) or an array (H, W[, 3|4]) as PNG."""
        cap = f"<figcaption>{html.escape(caption)}</figcaption>" if caption else ""
        alt = html.escape(caption, quote=True)
        self.blocks.append(f'<figure><img src="{_data_uri(image)}" alt="{alt}">{cap}</figure>')
        return self

    def table(self, rows: Sequence[Sequence[Any]], header: Sequence[str] | None = None) -> "Section":
        """Add a table; floats are shown to 4 significant digits.

        Args:
          rows: R rows of C cells each.
          header: C column names, or None.
        """
        width = len(header) if header is not None else None
        for i, row in enumerate(rows):
            width = len(row) if width is None else width
            if len(row) != width:
                raise ValueError(f"rows: row {i} has {len(row)} cells, expected {width}")
        head = "<tr>" + "".join(_cell(h, "th") for h in header) + "</tr>" if header else ""
        body = "".join("<tr>" + "".join(_cell(v) for v in row) + "</tr>" for row in rows)
        self.blocks.append(f"<table>{head}{body}</table>")
        return self

    def metrics(self, values: Mapping[str, Any]) -> "Section":
        """Add a two-column (metric, value) table of a flat mapping."""
        return self.table([(k, v) for k, v in values.items()], header=("metric", "value"))

    def html(self) -> str:
        """The section as an HTML fragment."""
        heading = f"<h2>{html.escape(self.title)}</h2>\n" if self.title else ""
        return f"<section>{heading}" + "\n".join(self.blocks) + "\n</section>"


class Report:
    """An HTML report: a title and a list of sections.

    ``figure``, ``table``, ``metrics`` and ``text`` on the report add to its last
    section (an untitled one is started if there is none).

    Args:
      title: the page title and top heading.
    """

    def __init__(self, title: str):
        self.title = title
        self.sections: list[Section] = []

    def section(self, title: str, text: str | None = None) -> Section:
        """Start a new section and return it."""
        return self.add(Section(title, text))

    def add(self, section: Section) -> Section:
        """Append a section built elsewhere and return it."""
        if not isinstance(section, Section):
            raise ValueError(f"section: expected a Section, got {type(section).__name__}")
        self.sections.append(section)
        return section

    def _last(self) -> Section:
        return self.sections[-1] if self.sections else self.section("")

    def text(self, text: str) -> "Report":
        """:meth:`Section.text` on the last section."""
        self._last().text(text)
        return self

    def figure(self, image, caption: str = "") -> "Report":
        """:meth:`Section.figure` on the last section."""
        self._last().figure(image, caption)
        return self

    def table(self, rows, header=None) -> "Report":
        """:meth:`Section.table` on the last section."""
        self._last().table(rows, header)
        return self

    def metrics(self, values: Mapping[str, Any]) -> "Report":
        """:meth:`Section.metrics` on the last section."""
        self._last().metrics(values)
        return self

    def html(self) -> str:
        """The whole report as one standalone HTML document."""
        stamp = datetime.datetime.now().isoformat(timespec="seconds")
        title = html.escape(self.title)
        body = "\n".join(s.html() for s in self.sections)
        return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
                f"<title>{title}</title><style>{_CSS}</style></head>\n<body>"
                f'<h1>{title}</h1><p class="meta">written {stamp}</p>\n{body}\n</body></html>\n')

    def write(self, directory: str | os.PathLike, name: str = "report.html") -> str:
        """Write the report to ``directory/name`` atomically (created if missing).

        Returns:
          The path written.
        """
        return atomic_write(os.path.join(directory, name), self.html())
