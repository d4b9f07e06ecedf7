"""The HTML report writer: embedded figures, tables, escaping, atomic writes; plot helpers."""

import base64
import html.parser
import io
import json
import os
import re

import numpy as np
import pytest
from PIL import Image

from jaxinterp import plot
from jaxinterp.report import Report, Section, atomic_write, write_json


class _Parser(html.parser.HTMLParser):
    """Collects <img> attributes, table cells (tag, text), element ids, link targets, and the
    text of the table of contents' links, of <code>, <caption> and <figcaption> elements."""

    _TEXT = ("td", "th", "code", "caption", "figcaption", "a")

    def __init__(self):
        super().__init__()
        self.images, self.cells, self.ids, self.hrefs, self.toc = [], [], [], [], []
        self.texts = {tag: [] for tag in self._TEXT}
        self._open, self._in_nav = {}, False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if "id" in attrs:
            self.ids.append(attrs["id"])
        if tag == "img":
            self.images.append(attrs)
        if tag == "a" and "href" in attrs:
            self.hrefs.append(attrs["href"])
        if tag == "nav":
            self._in_nav = True
        if tag in self._TEXT:
            self._open[tag] = ""

    def handle_data(self, data):
        for tag in self._open:
            self._open[tag] += data

    def handle_endtag(self, tag):
        if tag == "nav":
            self._in_nav = False
        if tag in self._open:
            text = self._open.pop(tag)
            self.texts[tag].append(text)
            if tag in ("td", "th"):
                self.cells.append((tag, text))
            if tag == "a" and self._in_nav:
                self.toc.append((self.hrefs[-1], text))


def _parse(path):
    p = _Parser()
    with open(path) as f:
        p.feed(f.read())
    p.close()
    return p


def _decode(src):
    mime, data = re.fullmatch(r"data:(image/\w+);base64,(.*)", src).groups()
    return mime, base64.b64decode(data)


def test_figures_are_embedded_losslessly(tmp_path):
    rng = np.random.default_rng(0)
    array = rng.integers(0, 256, (12, 17, 3), dtype=np.uint8)
    png = tmp_path / "fig.png"
    Image.fromarray(array[::-1]).save(png)
    report = Report("R")
    report.section("Figures", "two figures").figure(array, "from an array").figure(png, "from a file")
    path = report.write(tmp_path / "out")
    parsed = _parse(path)
    assert [img["alt"] for img in parsed.images] == ["from an array", "from a file"]
    assert parsed.texts["figcaption"] == ["from an array", "from a file"]
    assert all(img["loading"] == "eager" and "max-width:100%" in img["style"] for img in parsed.images)
    decoded = []
    for img in parsed.images:
        mime, data = _decode(img["src"])
        assert mime == "image/png"
        decoded.append(np.asarray(Image.open(io.BytesIO(data))))
    np.testing.assert_array_equal(decoded[0], array)
    np.testing.assert_array_equal(decoded[1], array[::-1])
    assert "fig.png" not in open(path).read()  # standalone: no reference to the file


def test_table_and_metrics_rendered(tmp_path):
    report = Report("R")
    report.section("Numbers").table([["a", 1, 0.123456], ["b<>", 2, 3.0]], header=["name", "n", "x"])
    report.metrics({"accuracy": 0.987654, "count": 7})
    parsed = _parse(report.write(tmp_path))
    assert parsed.cells == [
        ("th", "name"), ("th", "n"), ("th", "x"),
        ("td", "a"), ("td", "1"), ("td", "0.1235"),
        ("td", "b<>"), ("td", "2"), ("td", "3"),
        ("th", "metric"), ("th", "value"),
        ("td", "accuracy"), ("td", "0.9877"), ("td", "count"), ("td", "7"),
    ]


def test_sections_added_in_order_and_escaped(tmp_path):
    report = Report("Title & <co>")
    report.add(Section("First", "a < b\n\nsecond paragraph"))
    report.section("Second").text("x")
    text = open(report.write(tmp_path)).read()
    assert "<title>Title &amp; &lt;co&gt;</title>" in text
    assert text.index("<h2>First</h2>") < text.index("<h2>Second</h2>")
    assert "<p>a &lt; b</p>" in text and "<p>second paragraph</p>" in text


def test_table_of_contents_links_every_titled_section(tmp_path):
    titles = ["Saliency & maps", "Saliency & maps", "", "saliency-maps-2", "!!!", "Contents", "Results (n=3)"]
    report = Report("R")
    for title in titles:
        report.section(title, "x")
    parsed = _parse(report.write(tmp_path))
    titled = [t for t in titles if t]
    assert [text for _, text in parsed.toc] == titled  # every titled section, in order; untitled ones left out
    assert len(parsed.ids) == len(set(parsed.ids))  # ids unique in the page
    targets = [href.removeprefix("#") for href, _ in parsed.toc]
    assert all(href.startswith("#") for href, _ in parsed.toc)
    assert set(targets) <= set(parsed.ids) and len(set(targets)) == len(titled)
    assert targets == ["saliency-maps", "saliency-maps-2", "saliency-maps-2-2", "section", "contents-2",
                       "results-n-3"]
    assert targets == [a for a in report.anchors() if a]
    text = open(os.path.join(tmp_path, "report.html")).read()
    assert text.index("</h1>") < text.index('<nav class="toc"') < text.index("<section")
    for target, title in zip(targets, titled):  # each anchor is the section with that heading
        assert f'<section id="{target}"><h2>{html.escape(title)}</h2>' in text
    assert 'class="toc"' not in Report("empty").html()  # no contents without titled sections
    assert 'class="toc"' not in Report("untitled").text("only text").html()


def test_command_line_shown_escaped():
    cmd = """jaxinterp demo --out 'runs/<a & b>' --note "x" | tee log"""
    sec = Section("Run", "text", command=cmd)
    assert sec.command_line == cmd
    page = Report("R")
    page.add(sec)
    page.section("Later").command("  python -m bench  ").text("t")  # set later; returns the section
    page.section("None")
    parsed = _Parser()
    parsed.feed(page.html())
    assert parsed.texts["code"] == [cmd, "python -m bench"]  # round-trips through the escaping
    text = page.html()
    assert ("<h2>Run</h2>\n<p class=\"reproduce\">Reproduce: <code>jaxinterp demo --out "
            "&#x27;runs/&lt;a &amp; b&gt;&#x27; --note &quot;x&quot; | tee log</code></p>") in text
    assert text.count("Reproduce:") == 2
    assert text.index("Reproduce: <code>python") < text.index("<p>t</p>")  # under the heading, before the body
    assert Section("S").command("a").command("b").command_line == "b"
    assert Report("R").section("S", command="make demo").command_line == "make demo"
    with pytest.raises(ValueError, match="cmd: expected a non-blank command line"):
        Section("S", command="  ")
    with pytest.raises(ValueError, match="cmd: expected a non-blank command line"):
        Section("S").command(["make", "demo"])


def test_table_captions(tmp_path):
    report = Report("R")
    report.section("T").table([[1, 2]], header=["a", "b"], caption="Counts <per> class & seed")
    report.table([[3]], caption="second")
    report.metrics({"acc": 0.5}, caption="Metrics")
    report.table([[4]])  # no caption: no <caption> element
    parsed = _parse(report.write(tmp_path))
    assert parsed.texts["caption"] == ["Counts <per> class & seed", "second", "Metrics"]
    text = open(os.path.join(tmp_path, "report.html")).read()
    assert "<table><caption>Counts &lt;per&gt; class &amp; seed</caption><tr><th>a</th>" in text
    assert text.count("<caption>") == 3 and "<table><tr><td class=\"num\">4</td>" in text


def test_bad_input_raises(tmp_path):
    with pytest.raises(ValueError, match="rows: row 1 has 1 cells, expected 2"):
        Section("s").table([[1, 2], [3]])
    with pytest.raises(ValueError, match="image: expected"):
        Section("s").figure(np.zeros((4, 4, 5)))
    with pytest.raises(ValueError, match="image: expected an image file"):
        Section("s").figure(str(tmp_path / "notes.txt"))
    with pytest.raises(ValueError, match="section: expected a Section"):
        Report("r").add("not a section")


def test_write_is_atomic(tmp_path, monkeypatch):
    Report("old").write(tmp_path)
    old = (tmp_path / "report.html").read_text()

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        Report("new").write(tmp_path)
    monkeypatch.undo()
    assert (tmp_path / "report.html").read_text() == old
    assert os.listdir(tmp_path) == ["report.html"]  # no temporary file left behind
    atomic_write(tmp_path / "report.html", b"bytes")
    assert (tmp_path / "report.html").read_bytes() == b"bytes"


def test_write_json_refuses_nan(tmp_path):
    write_json(tmp_path / "m.json", {"b": 1.5, "a": [1, 2]})
    assert json.loads((tmp_path / "m.json").read_text()) == {"a": [1, 2], "b": 1.5}
    with pytest.raises(ValueError, match="obj: not finite JSON"):
        write_json(tmp_path / "bad.json", {"x": float("nan")})
    assert not (tmp_path / "bad.json").exists()


def test_overlay_heatmap_box_grid(tmp_path):
    image = np.full((8, 8, 3), 0.5, np.float32)
    saliency = np.zeros((4, 4))
    saliency[1, 2] = 2.0
    out = plot.overlay(image, saliency, alpha=1.0)
    assert out.shape == (8, 8, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out[0, 0], [128, 128, 128])  # zero saliency shows the image
    np.testing.assert_array_equal(out[2:4, 4:6], np.broadcast_to(plot.heatmap(saliency)[1, 2], (2, 2, 3)))
    signed = plot.heatmap(np.array([[-1.0, 0.0, 1.0]]), signed=True, percentile=100)
    assert signed[0, 0, 2] > signed[0, 0, 0] and signed[0, 2, 0] > signed[0, 2, 2]  # blue < 0 < red
    boxed = plot.draw_box(np.zeros((6, 6, 3)), (1.0, 2.0, 5.0, 6.0))
    outline = np.zeros((6, 6), bool)
    outline[1, 2:6] = outline[4, 2:6] = outline[1:5, 2] = outline[1:5, 5] = True
    np.testing.assert_array_equal(boxed[..., 1] == 255, outline)
    path = plot.grid([image, saliency], ["img", "map"], tmp_path / "grid.png")
    assert Image.open(path).format == "PNG"
    with pytest.raises(ValueError, match="titles: expected 2 titles"):
        plot.grid([image, saliency], ["one"], tmp_path / "x.png")
