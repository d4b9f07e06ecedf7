"""A self-contained HTML report: sections of text, figures, tables and metrics.

Figures are embedded as base64 data URIs, so ``report.html`` is one standalone
file that can be mailed or archived.  A report is a list of :class:`Section`
objects; code that contributes to a report builds a section and adds it::

    report = Report("Demo")
    sec = report.section("Saliency", "Gradient saliency of the true class.",
                         command="jaxinterp demo --quick")
    sec.figure("saliency.png", "Synthetic images, box = ground truth.")
    sec.metrics({"accuracy": 0.93})
    report.add(Section("Extra").table([[1, 2.5]], header=["n", "value"], caption="Counts."))
    report.write("runs/demo/123")          # -> runs/demo/123/report.html

The page opens with a table of contents linking to every titled section (the
anchor ids come from the titles and are unique within the page).  A section
given a ``command`` shows "Reproduce: <command>" under its heading.  Figures
and captioned tables are numbered ("Figure 2.", "Table 1.") by the stylesheet.

Every builder method returns its section (or report), so calls chain.
"""

from __future__ import annotations

import base64
import datetime
import html
import io
import mimetypes
import os
import re
from typing import Any, Mapping, Sequence

import numpy as np

from jaxinterp.files import atomic_write

__all__ = ["Report", "Section"]

_CSS = """
body { font: 16px/1.5 system-ui, sans-serif; max-width: 60rem; margin: 2rem auto; padding: 0 1rem;
       color: #222; background: #fff; counter-reset: figure table; }
h1 { border-bottom: 2px solid #444; margin-bottom: 0.25rem; }
h2 { border-bottom: 1px solid #bbb; margin-top: 2.5rem; }
a { color: #0550ae; }
.meta { color: #666; font-size: 0.85rem; }
nav.toc { background: #f6f8fa; border: 1px solid #ddd; border-radius: 4px; padding: 0.5rem 1rem; margin: 1rem 0; }
nav.toc h2 { font-size: 1rem; border: 0; margin: 0.25rem 0; }
nav.toc ol { margin: 0.25rem 0; padding-left: 1.5rem; }
.reproduce { font-size: 0.9rem; color: #444; }
code { font: 0.85rem/1.4 ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; background: #f2f2f2;
       padding: 0.1rem 0.3rem; border-radius: 3px; overflow-wrap: anywhere; }
figure { margin: 1.5rem 0; counter-increment: figure; }
figure img { display: block; }  /* max-width: 100 % is on each img */
figure img.pixels { image-rendering: pixelated; }
figcaption { font-size: 0.9rem; color: #444; margin-top: 0.4rem; }
figcaption::before { content: "Figure " counter(figure) ". "; font-weight: 600; }
table { border-collapse: collapse; margin: 1rem 0; font-size: 0.9rem; }
caption { caption-side: top; text-align: left; font-size: 0.9rem; color: #444; padding-bottom: 0.3rem;
          width: max-content; max-width: min(40rem, 90vw); }  /* a short table may widen to its caption */
caption::before { counter-increment: table; content: "Table " counter(table) ". "; font-weight: 600; }
th, td { border: 1px solid #ccc; padding: 0.25rem 0.6rem; text-align: left; }
th { background: #f2f2f2; } tr:nth-child(even) td { background: #fafafa; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
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


def _slug(title: str) -> str:
    """An anchor id from a title: lower-case ASCII letters and digits joined by '-' ("section" if none)."""
    slug = re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")
    return slug or "section"


class Section:
    """A titled part of a report: a sequence of text, figure, table and metric blocks.

    Args:
      title: the section heading; an empty title makes an untitled section, which
        has no heading and no entry in the table of contents.
      text: optional first paragraph(s); blank lines separate paragraphs.
      command: optional shell command line that reproduces the section, shown
        under the heading as "Reproduce: <command>" (see :meth:`command`).

    Attributes:
      title: the heading.
      blocks: the HTML fragments of the section's body, in order.
      command_line: the reproducing command, or None.
    """

    def __init__(self, title: str, text: str | None = None, *, command: str | None = None):
        self.title = title
        self.blocks: list[str] = []
        self.command_line: str | None = None
        if command is not None:
            self.command(command)
        if text:
            self.text(text)

    def command(self, cmd: str) -> "Section":
        """Set the shell command line that reproduces this section (replacing any earlier one).

        Args:
          cmd: the command line, e.g. ``"jaxinterp demo --quick"``; shown verbatim (escaped).

        Returns:
          This section.

        Raises:
          ValueError: if ``cmd`` is not a non-blank string.
        """
        if not isinstance(cmd, str) or not cmd.strip():
            raise ValueError(f"cmd: expected a non-blank command line, got {cmd!r}")
        self.command_line = cmd.strip()
        return self

    def text(self, text: str) -> "Section":
        """Add paragraphs of plain text.

        Args:
          text: the text; it is escaped, and blank lines separate paragraphs.

        Returns:
          This section.
        """
        for para in text.strip().split("\n\n"):
            self.blocks.append(f"<p>{html.escape(para.strip())}</p>")
        return self

    def figure(self, image, caption: str = "") -> "Section":
        """Embed an image, base64-encoded, so that the page stays one standalone file.

        The image scales down to the page width; an array is drawn with sharp
        (pixelated) pixels.  The caption is also the image's ``alt`` text.

        Args:
          image: a file path (.png, .jpg, .svg), or an array (H, W), (H, W, 3) or
            (H, W, 4), uint8 or float in [0, 1], encoded as PNG.
          caption: the caption under the figure (numbered "Figure N." on the page).

        Returns:
          This section.

        Raises:
          ValueError: for a file that is not an image, or an array of another shape.
        """
        cls = "" if isinstance(image, (str, os.PathLike)) else ' class="pixels"'
        alt = html.escape(caption, quote=True)
        self.blocks.append(f'<figure><img src="{_data_uri(image)}" alt="{alt}" loading="eager"{cls} '
                           f'style="max-width:100%;height:auto">'
                           f"<figcaption>{html.escape(caption)}</figcaption></figure>")
        return self

    def table(self, rows: Sequence[Sequence[Any]], header: Sequence[str] | None = None,
              caption: str | None = None) -> "Section":
        """Add a table; floats are shown to 4 significant digits, numbers right-aligned.

        Args:
          rows: R rows of C cells each.
          header: C column names, or None.
          caption: a caption above the table (numbered "Table N." on the page), or None.

        Returns:
          This section.

        Raises:
          ValueError: if the rows (and header) do not all have the same length.
        """
        width = len(header) if header is not None else None
        for i, row in enumerate(rows):
            width = len(row) if width is None else width
            if len(row) != width:
                raise ValueError(f"rows: row {i} has {len(row)} cells, expected {width}")
        cap = f"<caption>{html.escape(caption)}</caption>" if caption else ""
        head = "<tr>" + "".join(_cell(h, "th") for h in header) + "</tr>" if header else ""
        body = "".join("<tr>" + "".join(_cell(v) for v in row) + "</tr>" for row in rows)
        self.blocks.append(f"<table>{cap}{head}{body}</table>")
        return self

    def metrics(self, values: Mapping[str, Any], caption: str | None = None) -> "Section":
        """Add a two-column (metric, value) table of a flat mapping.

        Args:
          values: metric name -> value.
          caption: as in :meth:`table`.

        Returns:
          This section.
        """
        return self.table([(k, v) for k, v in values.items()], header=("metric", "value"), caption=caption)

    def html(self, anchor: str | None = None) -> str:
        """The section as an HTML fragment.

        Args:
          anchor: the ``id`` of the ``<section>`` element; by default derived from
            the title (:class:`Report` passes ids that are unique in the page).

        Returns:
          The ``<section>`` element.
        """
        anchor = _slug(self.title) if anchor is None and self.title else anchor
        ident = f' id="{html.escape(anchor, quote=True)}"' if anchor else ""
        heading = f"<h2>{html.escape(self.title)}</h2>\n" if self.title else ""
        reproduce = (f'<p class="reproduce">Reproduce: <code>{html.escape(self.command_line)}</code></p>\n'
                     if self.command_line else "")
        return f"<section{ident}>{heading}{reproduce}" + "\n".join(self.blocks) + "\n</section>"


class Report:
    """An HTML report: a title, a table of contents and a list of sections.

    ``figure``, ``table``, ``metrics`` and ``text`` on the report add to its last
    section (an untitled one is started if there is none).

    Args:
      title: the page title and top heading.
    """

    def __init__(self, title: str):
        self.title = title
        self.sections: list[Section] = []

    def section(self, title: str, text: str | None = None, *, command: str | None = None) -> Section:
        """Start a new section (arguments as for :class:`Section`) and return it."""
        return self.add(Section(title, text, command=command))

    def add(self, section: Section) -> Section:
        """Append a section built elsewhere and return it.

        Raises:
          ValueError: if ``section`` is not a :class:`Section`.
        """
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

    def table(self, rows, header=None, caption=None) -> "Report":
        """:meth:`Section.table` on the last section."""
        self._last().table(rows, header, caption)
        return self

    def metrics(self, values: Mapping[str, Any], caption: str | None = None) -> "Report":
        """:meth:`Section.metrics` on the last section."""
        self._last().metrics(values, caption)
        return self

    def anchors(self) -> list[str | None]:
        """The ``id`` of each section on the page, None for untitled ones.

        Ids are the titles' slugs (lower-case letters and digits joined by '-'),
        with "-2", "-3", ... appended where a slug is already taken, so they are
        unique in the page (also against the table of contents' own id).

        Returns:
          One entry per section, in order.
        """
        taken, ids = {"contents"}, []
        for s in self.sections:
            if not s.title:
                ids.append(None)
                continue
            base = ident = _slug(s.title)
            n = 1
            while ident in taken:
                n += 1
                ident = f"{base}-{n}"
            taken.add(ident)
            ids.append(ident)
        return ids

    def html(self) -> str:
        """The whole report as one standalone HTML document."""
        stamp = datetime.datetime.now().isoformat(timespec="seconds")
        title = html.escape(self.title)
        anchors = self.anchors()
        entries = [f'<li><a href="#{a}">{html.escape(s.title)}</a></li>'
                   for s, a in zip(self.sections, anchors) if a]
        toc = ('<nav class="toc" id="contents" aria-label="Contents"><h2>Contents</h2>\n<ol>\n'
               + "\n".join(entries) + "\n</ol></nav>\n") if entries else ""
        body = "\n".join(s.html(a or "") for s, a in zip(self.sections, anchors))
        return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
                f'<meta name="viewport" content="width=device-width, initial-scale=1">'
                f"<title>{title}</title><style>{_CSS}</style></head>\n<body>"
                f'<h1>{title}</h1><p class="meta">written {stamp}</p>\n{toc}{body}\n</body></html>\n')

    def write(self, directory: str | os.PathLike, name: str = "report.html") -> str:
        """Write the report to ``directory/name`` atomically (created if missing).

        Returns:
          The path written.
        """
        return atomic_write(os.path.join(directory, name), self.html())
