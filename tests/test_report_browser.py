"""The HTML report rendered by a real browser: headless Chromium loads every figure and paints the page.

Needs a Chromium binary (``chromium`` or ``chromium-browser`` on the PATH; on Debian
``apt-get install chromium``, which ``.ci/run`` does).  Without one the test FAILS when
the environment variable ``CI`` is set (to anything but "", "0" or "false"), so CI
cannot pass by not testing, and is skipped elsewhere, e.g. on a laptop without Chromium.

Two browser runs, in parallel:

* ``--dump-dom`` of a copy of the report with a small probe script appended (the
  report itself has no script): after the page's load event the script writes, into
  a ``<pre id="probe">``, for every ``<img>`` whether it is ``complete`` with a
  ``naturalWidth > 0``, its natural and rendered widths, and whether every link of
  the table of contents resolves to an element of the page;
* ``--screenshot`` of the report itself, which must be a 1200 x 2000 PNG that is not
  blank and shows both figures' colours (a red array, a green matplotlib plot).
"""

import html
import json
import os
import pathlib
import re
import shutil
import subprocess
import time

import numpy as np
import pytest
from matplotlib.figure import Figure
from PIL import Image

from jaxinterp.report import Report

RED, GREEN = (230, 20, 20), (20, 170, 60)

_PROBE = """<script>
window.addEventListener("load", function () {
  var imgs = Array.prototype.slice.call(document.images);
  var links = Array.prototype.slice.call(document.querySelectorAll("nav.toc a"));
  var out = document.createElement("pre");
  out.id = "probe";
  out.textContent = JSON.stringify({
    images: imgs.map(function (i) {
      return {loaded: i.complete && i.naturalWidth > 0, natural: i.naturalWidth, shown: i.clientWidth};
    }),
    links: links.map(function (a) {
      var id = a.getAttribute("href").slice(1);
      return {href: a.getAttribute("href"), resolves: document.getElementById(id) !== null};
    }),
    bodyWidth: document.body.clientWidth,
    overflow: document.documentElement.scrollWidth > window.innerWidth
  });
  document.body.appendChild(out);
});
</script>
"""


def _chromium():
    """The Chromium binary, or fail (in CI) / skip (elsewhere) when none is installed."""
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    message = "no chromium / chromium-browser on the PATH (Debian: apt-get install chromium)"
    if os.environ.get("CI", "").strip().lower() not in ("", "0", "false"):
        pytest.fail(f"CI: {message}")
    pytest.skip(message)


def _browser(binary, profile, *args):
    """Start headless Chromium with its own profile directory and nothing that reaches the network."""
    cmd = [binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={profile}", "--virtual-time-budget=5000", *args]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _finish(proc, what):
    try:
        out, err = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        pytest.fail(f"{what}: chromium did not finish in 60 s; stderr tail:\n{err[-2000:]}")
    assert proc.returncode == 0, f"{what}: chromium exited {proc.returncode}; stderr tail:\n{err[-2000:]}"
    return out, err


def _report(tmp_path):
    """A small report: a TOC, a command, an array figure (red), a wide matplotlib PNG (green), a table."""
    array = np.zeros((48, 64, 3), np.float32)
    array[:] = np.array(RED) / 255.0
    array[:, :8] = np.linspace(0.0, 1.0, 48)[:, None, None]  # a grey ramp: many colours
    fig = Figure(figsize=(20, 3), dpi=100, facecolor=np.array(GREEN) / 255.0)  # 2000 px: wider than the page
    ax = fig.add_axes((0.05, 0.15, 0.9, 0.7))
    x = np.linspace(0, 6, 200)
    ax.plot(x, np.sin(x))
    ax.set_title("sin")
    png = tmp_path / "plot.png"
    fig.savefig(png, facecolor=fig.get_facecolor())
    report = Report("Browser <check>")
    report.section("Figures", "An array and a matplotlib figure.", command="jaxinterp demo --quick")
    report.figure(array, "red array").figure(png, "green plot, 2000 px wide")
    report.section("Numbers").table([["a", 0.5], ["b", 2]], header=["name", "x"], caption="A table.")
    report.section("Figures", "A second section with the same title.")
    return report.write(tmp_path / "out")


def test_report_renders_in_headless_chromium(tmp_path):
    binary = _chromium()
    start = time.perf_counter()
    path = _report(tmp_path)
    page = open(path).read()
    assert "<script" not in page  # the report needs no JavaScript; only the test's copy probes
    probed = tmp_path / "probed.html"
    probed.write_text(page.replace("</body>", _PROBE + "</body>"))
    shot = tmp_path / "shot.png"
    dom = _browser(binary, tmp_path / "profile-dom", "--dump-dom", probed.as_uri())
    screen = _browser(binary, tmp_path / "profile-shot", f"--screenshot={shot}", "--window-size=1200,2000",
                      "--hide-scrollbars", pathlib.Path(path).resolve().as_uri())
    out, err = _finish(dom, "--dump-dom")
    _finish(screen, "--screenshot")

    match = re.search(r'<pre id="probe">(.*?)</pre>', out, re.S)
    assert match, f"the probe did not run (no load event?); DOM head:\n{out[:1000]}\nstderr tail:\n{err[-2000:]}"
    probe = json.loads(html.unescape(match.group(1)))
    assert [i["loaded"] for i in probe["images"]] == [True, True], probe
    assert [i["natural"] for i in probe["images"]] == [64, 2000], probe
    assert probe["images"][0]["shown"] == 64  # small figures keep their size
    assert 0 < probe["images"][1]["shown"] <= probe["bodyWidth"] < 2000  # max-width: 100 %
    assert not probe["overflow"], probe
    assert [link["href"] for link in probe["links"]] == ["#figures", "#numbers", "#figures-2"]
    assert all(link["resolves"] for link in probe["links"]), probe

    assert shot.is_file(), "no screenshot written"
    image = np.asarray(Image.open(shot).convert("RGB"))
    assert image.shape == (2000, 1200, 3)
    colours = np.unique(image.astype(np.uint32) @ np.array([1 << 16, 1 << 8, 1], np.uint32))
    assert len(colours) > 50, f"blank screenshot? {len(colours)} distinct colours"
    for name, rgb in (("red array", RED), ("green plot", GREEN)):
        near = np.abs(image.astype(np.int16) - np.array(rgb, np.int16)).max(axis=-1) <= 8
        assert near.sum() > 500, f"the {name} is not on the screenshot ({near.sum()} pixels of its colour)"
    elapsed = time.perf_counter() - start
    assert elapsed < 60, f"the browser check took {elapsed:.1f} s"
