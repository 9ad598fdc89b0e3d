import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from deepsci.apps.cli import main

ROOT = Path(__file__).resolve().parents[2]


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "deepsci.apps", *args], capture_output=True,
                          text=True, timeout=300, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})


def test_version_and_help(capsys):
    assert main(["version"]) == 0
    assert "deepsci" in capsys.readouterr().out
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for command in ("version", "devices", "demo"):
        assert command in out


def test_devices_reports_auto(capsys):
    assert main(["devices"]) == 0
    assert "auto -> MirroredStrategy with 2 replica(s)" in capsys.readouterr().out


def test_user_error_is_one_line_and_exit_2():
    proc = _cli("demo", "--app", "astrology", "--out", "/tmp/none")
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert lines[-1].startswith("error: expected apps among")
    assert "Traceback" not in proc.stderr


def test_usage_error_exit_2(capsys):
    assert main(["demo", "--no-such-flag"]) == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert lines == ["error: no such option: --no-such-flag (try 'deepsci demo --help')"]


def test_every_package_folder_is_listed_in_pyproject():
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    mapping = {"core": "deepsci.core", "apps": "deepsci.apps", "data": "deepsci.data"}
    found = set()
    for top, name in mapping.items():
        for init in (ROOT / top).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT / top).parts
            found.add(".".join((name, *rel)))
    assert found == listed


def test_demo_folder_is_claimed_once_and_reused(tmp_path):
    """`make demo` twice: the second run replaces the first's app folders; a folder of the
    user's own files is refused before anything is written."""
    from deepsci.apps.cli import DEMO_MARK, _claim_demo_folder
    from deepsci.core.errors import InputError

    out = tmp_path / "demo-report"
    _claim_demo_folder(out)
    (out / "molecules").mkdir()
    _claim_demo_folder(out)                       # an earlier demo's folder: accepted
    assert (out / DEMO_MARK).is_file() and (out / "molecules").is_dir()
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("x")
    with pytest.raises(InputError, match="folder of other files"):
        _claim_demo_folder(mine)
    assert sorted(p.name for p in mine.iterdir()) == ["notes.txt"]
