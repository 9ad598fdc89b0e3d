"""The demo report: one Markdown and one HTML page with every app's metrics and figures."""
from __future__ import annotations

import html
import os
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

from .io import write_text

__all__ = ["DemoResult", "DemoRow", "ViewerOutput", "viewer_outputs", "find_viewer_outputs", "write_report"]


@dataclass
class DemoRow:
    """One metric of deepsci beside a baseline on the same data.

    Attributes
    ----------
    metric : str
        What is measured, e.g. ``"SNP F1"``.
    deepsci, baseline : float or None
        The two values (``None`` where the baseline has no such number).
    baseline_name : str
        e.g. ``"bcftools call -m"``.
    higher_is_better : bool
        Decides :attr:`verdict`.
    model, data : str
        Which model and which data produced the deepsci number.
    tolerance : float
        Differences up to this count as a tie.
    """

    metric: str
    deepsci: float | None
    baseline: float | None = None
    baseline_name: str = ""
    higher_is_better: bool = True
    model: str = ""
    data: str = ""
    tolerance: float = 0.0

    @property
    def verdict(self) -> str:
        """``"ahead"``, ``"tied"``, ``"behind"`` or ``"-"`` (no baseline)."""
        if self.deepsci is None or self.baseline is None:
            return "-"
        diff = (self.deepsci - self.baseline) * (1 if self.higher_is_better else -1)
        if abs(diff) <= self.tolerance:
            return "tied"
        return "ahead" if diff > 0 else "behind"


@dataclass(frozen=True)
class ViewerOutput:
    """A file a demo wrote for its field's viewer, linked from the report.

    Attributes
    ----------
    label : str
        What the link says, e.g. ``"calls.vcf.gz"``.
    path : Path
        The file (or folder, for a zarr store).
    viewer : str
        The program that opens it, e.g. ``"IGV"`` or ``"QuPath"``.
    """

    label: str
    path: Path
    viewer: str


def viewer_outputs(items) -> list[ViewerOutput]:
    """``[(label, path, viewer), ...]`` as :class:`ViewerOutput`, keeping only paths that exist."""
    return [ViewerOutput(label, Path(path), viewer) for label, path, viewer in items
            if path is not None and Path(path).exists()]


def find_viewer_outputs(root: str | os.PathLike, patterns) -> list[ViewerOutput]:
    """Viewer files a demo wrote under ``root``: ``[(glob, viewer), ...]`` -> existing matches.

    Hidden paths (temporaries, resume markers) are never linked.
    """
    root = Path(root)
    found: list[ViewerOutput] = []
    for pattern, viewer in patterns:
        for p in sorted(root.glob(pattern)):
            if not any(part.startswith(".") for part in p.relative_to(root).parts):
                # the path below root is the label: two runs' files of one slide stay apart
                found.append(ViewerOutput(p.relative_to(root).as_posix(), p, viewer))
    return found


@dataclass
class DemoResult:
    """What one app's demo produced: comparison rows, other metrics, figures, viewer files."""

    app: str
    title: str
    metrics: dict[str, float | str] = field(default_factory=dict)
    figures: list[Path] = field(default_factory=list)
    text: str = ""
    seconds: float | None = None
    rows: list[DemoRow] = field(default_factory=list)
    viewers: list[ViewerOutput] = field(default_factory=list)


def _fmt(v) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def _rel(path: Path, out_dir: Path) -> str:
    return os.path.relpath(Path(path), out_dir)


def _md_text(text: str) -> str:
    """Text for a Markdown page: brackets escaped, '<' and '&' as entities (no raw HTML)."""
    return html.escape(str(text), quote=False).replace("[", r"\[").replace("]", r"\]")


def _viewer_links(r: DemoResult, out_dir: Path) -> tuple[list[str], str]:
    """Markdown lines and an HTML list linking the result's viewer files that exist."""
    items = [v for v in r.viewers if Path(v.path).exists()]  # a file never written is not linked
    if not items:
        return [], ""
    md = ["Files for the field's viewer:", ""]
    lis = []
    for v in items:
        # percent-encoded: spaces, brackets and '&' of a file name stay inside the link
        rel = quote(Path(_rel(v.path, out_dir)).as_posix())
        md.append(f"- [{_md_text(v.label)}]({rel}) — open with {_md_text(v.viewer)}")
        lis.append(f'<li><a href="{html.escape(rel)}">{html.escape(v.label)}</a> '
                   f"({html.escape(v.viewer)})</li>")
    md.append("")
    return md, f"<p>Files for the field's viewer:</p><ul>{''.join(lis)}</ul>"


def write_report(results: list[DemoResult], out_dir: str | os.PathLike) -> Path:
    """Write ``report.md`` and ``report.html`` into ``out_dir``; return the Markdown path."""
    out_dir = Path(out_dir)
    md = ["# deepsci demo report", ""]
    body = ["<h1>deepsci demo report</h1>"]
    for r in results:
        secs = f" ({r.seconds:.0f} s)" if r.seconds is not None else ""
        md += [f"## {r.app}: {r.title}{secs}", ""]
        body.append(f"<h2>{html.escape(r.app)}: {html.escape(r.title)}{secs}</h2>")
        if r.text:
            md += [r.text, ""]
            body.append(f"<p>{html.escape(r.text)}</p>")
        if r.rows:
            head = ["metric", "deepsci", "baseline", "", "model", "data"]
            cells = [[x.metric, _fmt(x.deepsci) if x.deepsci is not None else "-",
                      (f"{_fmt(x.baseline)} ({x.baseline_name})" if x.baseline is not None else "-"),
                      x.verdict, x.model, x.data] for x in r.rows]
            md += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
            md += ["| " + " | ".join(c) + " |" for c in cells]
            md.append("")
            trs = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>"
                          for row in cells)
            ths = "".join(f"<th>{html.escape(h)}</th>" for h in head)
            body.append(f"<table><tr>{ths}</tr>{trs}</table>")
        if r.metrics:
            md += ["| metric | value |", "|---|---|"]
            md += [f"| {k} | {_fmt(v)} |" for k, v in r.metrics.items()]
            md.append("")
            rows = "".join(f"<tr><td>{html.escape(k)}</td><td>{html.escape(_fmt(v))}</td></tr>"
                           for k, v in r.metrics.items())
            body.append(f"<table><tr><th>metric</th><th>value</th></tr>{rows}</table>")
        links_md, links_html = _viewer_links(r, out_dir)
        md += links_md
        if links_html:
            body.append(links_html)
        for fig in r.figures:
            rel = _rel(fig, out_dir)
            md += [f"![{Path(fig).stem}]({rel})", ""]
            body.append(f'<figure><img src="{html.escape(rel)}" style="max-width:45em">'
                        f"<figcaption>{html.escape(Path(fig).stem)}</figcaption></figure>")
    style = "body{font-family:sans-serif;max-width:60em;margin:auto}td,th{padding:2px 8px}"
    write_text(out_dir / "report.html",
               f"<!doctype html><html><head><meta charset='utf-8'><title>deepsci demo</title>"
               f"<style>{style}</style></head><body>{''.join(body)}</body></html>\n")
    return write_text(out_dir / "report.md", "\n".join(md) + "\n")
