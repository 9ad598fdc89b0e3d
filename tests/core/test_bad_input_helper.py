"""The shared bad-input helper itself must be able to fail (tests/conftest.py::bad_input)."""
import pytest


def test_bad_input_passes_on_a_user_error(bad_input, tmp_path):
    missing = tmp_path / "nope.csv"
    line = bad_input(["molecules", "predict", missing, "--model", tmp_path / "m.keras",
                      "--out", tmp_path / "out"], watch=[tmp_path])
    assert str(tmp_path) in line


def test_bad_input_fails_on_success_and_on_leftovers(bad_input, tmp_path):
    with pytest.raises(AssertionError, match="exit 0"):
        bad_input(["version"])
    (tmp_path / "keep.txt").write_text("x")

    def leftover():
        (tmp_path / ".out.tmp").write_text("half")

    import deepsci.apps.cli as cli

    real = cli._main

    def main_with_leftover(argv):
        leftover()
        return real(argv)

    mp = pytest.MonkeyPatch()
    mp.setattr(cli, "_main", main_with_leftover)
    try:
        with pytest.raises(AssertionError, match=r"new \['.out.tmp'\]"):
            bad_input(["molecules", "predict", tmp_path / "nope.csv", "--model", tmp_path / "m.keras",
                       "--out", tmp_path / "out"], watch=[tmp_path])
    finally:
        mp.undo()
