"""The demo report links each app's files for its field's viewer (issue #18).

A hand-made list of results: the report's Markdown and HTML link every viewer file
that exists, relative to the report, with the viewer's name beside it; a missing file
is not linked; names are HTML-escaped.
"""
from __future__ import annotations

import html
import re
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote

from deepsci.core.report import DemoResult, ViewerOutput, viewer_outputs, write_report


class _Links(HTMLParser):
    """(href, text of the link, text after it in its list item) of every <a> in the page."""

    def __init__(self):
        super().__init__()
        self.links: list[list[str]] = []
        self._where = None  # 1: inside the link, 2: after it in the same item

    def handle_starttag(self, tag, attrs):
        if tag == "a":
            self.links.append([dict(attrs)["href"], "", ""])
            self._where = 1
        else:
            self._where = None

    def handle_endtag(self, tag):
        self._where = 2 if tag == "a" else None

    def handle_data(self, data):
        if self._where is not None:
            self.links[-1][self._where] += data


def _results(tmp_path: Path) -> tuple[Path, list[DemoResult]]:
    out = tmp_path / "report"
    (out / "variants").mkdir(parents=True)
    (out / "variants" / "calls.vcf.gz").write_bytes(b"vcf")
    (out / "connectomics" / "segmentation.zarr").mkdir(parents=True)
    (out / "connectomics" / "segmentation.zarr" / "zarr.json").write_text("{}")
    odd = out / "pathology" / "a&b <slide>.contours.geojson"
    odd.parent.mkdir(parents=True)
    odd.write_text("{}")
    results = [
        DemoResult("variants", "calls", viewers=[
            ViewerOutput("calls.vcf.gz", out / "variants" / "calls.vcf.gz", "IGV"),
            ViewerOutput("reads.bam", out / "variants" / "reads.bam", "IGV")]),  # never written
        DemoResult("connectomics", "seg", viewers=[
            ViewerOutput("segmentation.zarr", out / "connectomics" / "segmentation.zarr",
                         "napari (ome-zarr plugin) or neuroglancer")]),
        DemoResult("pathology", "slides", viewers=[ViewerOutput("contours <&>", odd, "QuPath")]),
    ]
    return out, results


def test_report_links_existing_viewer_files_relatively_with_the_viewer(tmp_path):
    out, results = _results(tmp_path)
    write_report(results, out)
    page = (out / "report.html").read_text()
    parser = _Links()
    parser.feed(page)
    got = {(unquote(href), text, after.strip()) for href, text, after in parser.links}
    assert got == {
        ("variants/calls.vcf.gz", "calls.vcf.gz", "(IGV)"),
        ("connectomics/segmentation.zarr", "segmentation.zarr",
         "(napari (ome-zarr plugin) or neuroglancer)"),
        ("pathology/a&b <slide>.contours.geojson", "contours <&>", "(QuPath)"),
    }
    for href, _, _ in got:
        assert not Path(href).is_absolute() and (out / href).exists()
    assert "reads.bam" not in page
    # escaped in the page source: no raw markup from a file name or label
    assert "contours &lt;&amp;&gt;" in page and "a%26b%20%3Cslide%3E" in page  # escaped, encoded
    assert "<slide>" not in page

    md = (out / "report.md").read_text()
    links = re.findall(r"^- \[(.+?)\]\(([^)\s]+)\) — open with (.+)$", md, re.M)
    assert "<slide>" not in md and "contours &lt;&amp;&gt;" in md  # no raw HTML in the page
    assert {(html.unescape(label), unquote(href), viewer) for label, href, viewer in links} == {
        ("calls.vcf.gz", "variants/calls.vcf.gz", "IGV"),
        ("segmentation.zarr", "connectomics/segmentation.zarr",
         "napari (ome-zarr plugin) or neuroglancer"),
        ("contours <&>", "pathology/a&b <slide>.contours.geojson", "QuPath"),
    }
    assert "reads.bam" not in md


def test_viewer_outputs_keeps_only_files_that_exist(tmp_path):
    (tmp_path / "a.sdf").write_text("x")
    got = viewer_outputs([("predictions.sdf", tmp_path / "a.sdf", "PyMOL"),
                          ("gone.sdf", tmp_path / "gone.sdf", "PyMOL")])
    assert got == [ViewerOutput("predictions.sdf", tmp_path / "a.sdf", "PyMOL")]


def test_find_viewer_outputs_skips_hidden_temporaries(tmp_path):
    from deepsci.core.report import find_viewer_outputs

    (tmp_path / "h").mkdir()
    (tmp_path / "h" / "s1.contours.geojson").write_text("{}")
    (tmp_path / "h" / ".s2.x1.tmp.contours.geojson").write_text("{")  # a killed write's leftover
    (tmp_path / "h" / ".state").mkdir()
    (tmp_path / "h" / ".state" / "s3.contours.geojson").write_text("{}")
    got = find_viewer_outputs(tmp_path, [("**/*.contours.geojson", "QuPath"), ("*.vcf.gz", "IGV")])
    assert got == [ViewerOutput("h/s1.contours.geojson", tmp_path / "h" / "s1.contours.geojson", "QuPath")]
