"""bench/RESULTS.md is rendered from bench/results/<app>.json and never drifts from it."""
import importlib.util
import json
import re
import subprocess
from pathlib import Path

import pytest

from deepsci.core.errors import InputError

ROOT = Path(__file__).resolve().parents[2]
APPS = ("retinopathy", "pathology", "variants", "molecules", "connectomics")


def _load_renderer():
    spec = importlib.util.spec_from_file_location("render_results", ROOT / "bench" / "render_results.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


rr = _load_renderer()


def _row(**over):
    row = {"metric": "speed", "deepsci": 7614, "unit": "molecules/s", "peer": None,
           "goal": ">= 5000 molecules/s", "met": True, "command": "python bench/x.py --a",
           "commit": "827a954", "date": "2026-11-21"}
    row.update(over)
    if row["unit"] is None:
        del row["unit"]
    return row


def _write(folder: Path, name: str, doc) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.json"
    path.write_text(json.dumps(doc))
    return path


@pytest.fixture
def tiny(tmp_path):
    folder = tmp_path / "results"
    # "zeta" is no known section, so it must come after "core" whatever the file order.
    _write(folder, "zeta", {"app": "zeta", "machine": "1 core | no GPU", "rows": [
        _row(metric="F1 (a|b)", deepsci=1.0, unit=None, peer=0.94286, goal=">= 0.99", met=False,
             carried_over=True, commit="ecaccec"),
        _row(metric="kappa", deepsci=0.946912345, unit=None, peer="limit 1.0", goal=None, met=None),
    ]})
    _write(folder, "core", {"app": "core", "title": "core: matmul", "machine": "2 cores",
                            "inputs": "MODEL is a file", "rows": [_row()]})
    return folder


EXPECTED = """\
## core: matmul

Machine: 2 cores

Inputs: MODEL is a file

| metric | deepsci | peer or limit | goal | met | command | commit | date |
|---|---|---|---|---|---|---|---|
| speed | 7614 molecules/s | – | >= 5000 molecules/s | yes | `python bench/x.py --a` | `827a954` | 2026-11-21 |

## zeta

Machine: 1 core \\| no GPU

| metric | deepsci | peer or limit | goal | met | command | commit | date |
|---|---|---|---|---|---|---|---|
| F1 (a\\|b) | 1.0 | 0.94286 | >= 0.99 | **no** | `python bench/x.py --a` | `ecaccec` *carried over* | 2026-11-21 |
| kappa | 0.946912 | limit 1.0 | – | – | `python bench/x.py --a` | `827a954` | 2026-11-21 |
"""


def test_tiny_folder_renders_exactly(tiny):
    assert rr.render(tiny) == rr.HEADER + "\n" + EXPECTED


def test_missing_field_is_an_error_naming_field_and_file(tiny, capsys):
    doc = json.loads((tiny / "zeta.json").read_text())
    del doc["rows"][1]["commit"]
    path = _write(tiny, "zeta", doc)
    with pytest.raises(InputError) as err:
        rr.render(tiny)
    assert str(err.value) == f"expected field(s) commit in the results.rows[1], found none ({path})"
    assert rr.main(["--results", str(tiny), "--out", str(tiny / "page.md")]) == 2
    assert capsys.readouterr().err == f"error: expected field(s) commit in the results.rows[1], found none ({path})\n"
    assert not (tiny / "page.md").exists()


@pytest.mark.parametrize("field, value, message", [
    ("met", None, "expected rows[0].met true/false with a goal and null without one"),
    ("commit", "HEAD", "expected the results.rows[0].commit matching"),
    ("deepsci", None, "expected the results.rows[0].deepsci of type number or string, found null"),
    ("colour", "red", "expected only the fields metric, deepsci, unit"),
])
def test_wrong_values_are_errors(tiny, field, value, message):
    doc = json.loads((tiny / "core.json").read_text())
    doc["rows"][0][field] = value
    _write(tiny, "core", doc)
    with pytest.raises(InputError, match=re.escape(message)):
        rr.render(tiny)


def test_app_must_match_file_name(tiny):
    _write(tiny, "core", {"app": "variants", "machine": "2 cores", "rows": [_row()]})
    with pytest.raises(InputError, match="expected app 'core'"):
        rr.render(tiny)


def test_committed_page_equals_render_of_committed_json():
    page = (ROOT / "bench" / "RESULTS.md").read_text(encoding="utf-8")
    assert page == rr.render(ROOT / "bench" / "results"), "run: python bench/render_results.py"


def test_committed_json_covers_every_app_in_page_order():
    docs = rr.load_results(ROOT / "bench" / "results")
    apps = [doc["app"] for doc in docs]
    assert [a for a in apps if a in APPS] == list(APPS)
    for doc in docs:
        for row in doc["rows"]:
            # Carried-over figures must name a commit that really changed the old diary.
            if row.get("carried_over"):
                log = subprocess.run(["git", "log", "--format=%h", "-1", row["commit"], "--",
                                      "bench/RESULTS.md"], cwd=ROOT, capture_output=True, text=True)
                assert log.stdout.strip() == row["commit"], (doc["app"], row["metric"])


def test_write_app_results_merges_by_metric_and_fills_defaults(tmp_path, monkeypatch):
    path = tmp_path / "variants.json"
    old = [_row(metric="SNP F1", deepsci="0.99896", carried_over=True, commit="175dbae"),
           _row(metric="wall", deepsci="3.46×")]
    path.write_text(json.dumps({"app": "variants", "machine": "old box", "inputs": "MODEL: x",
                                "rows": old}))
    monkeypatch.setattr(rr.sys, "argv", [str(ROOT / "bench" / "variants.py"), "--seed", "1"])
    fresh = [{"metric": "SNP F1", "deepsci": 1.0, "peer": "bcftools 1.0", "goal": ">= 0.999",
              "met": True},
             {"metric": "INDEL F1", "deepsci": 0.99029, "peer": None, "goal": None, "met": None,
              "date": "2026-11-22"}]
    assert rr.write_app_results("variants", fresh, machine="new box", path=path) == path
    doc = json.loads(path.read_text())
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                          text=True).stdout.strip()
    assert (doc["machine"], doc["inputs"]) == ("new box", "MODEL: x")
    assert [r["metric"] for r in doc["rows"]] == ["SNP F1", "wall", "INDEL F1"]
    snp = doc["rows"][0]
    assert snp["deepsci"] == 1.0 and "carried_over" not in snp and snp["commit"] == head
    assert snp["command"] == "python bench/variants.py --seed 1"
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", snp["date"])
    assert doc["rows"][1] == old[1]
    assert doc["rows"][2]["date"] == "2026-11-22"


def test_write_app_results_rejects_bad_rows_and_writes_nothing(tmp_path):
    path = tmp_path / "variants.json"
    with pytest.raises(InputError, match=re.escape("expected field(s) met in the results.rows[0]")):
        rr.write_app_results("variants", [{"metric": "F1", "deepsci": 1.0, "peer": None,
                                           "goal": None, "commit": "abcdef0", "date": "2026-01-01",
                                           "command": "x"}], machine="m", path=path)
    assert not path.exists() and list(tmp_path.iterdir()) == []
