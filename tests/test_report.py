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
    """Collects <img> sources and table cells (tag, text) of an HTML page."""

    def __init__(self):
        super().__init__()
        self.images, self.cells, self._cell = [], [], None

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.images.append(dict(attrs))
        if tag in ("td", "th"):
            self._cell = [tag, ""]

    def handle_data(self, data):
        if self._cell is not None:
            self._cell[1] += data

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self.cells.append(tuple(self._cell))
            self._cell = None


def _parse(path):
    p = _Parser()
    with open(path) as f:
        p.feed(f.read())
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
