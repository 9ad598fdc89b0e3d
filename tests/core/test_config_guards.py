"""Ranges declared with the field, decoding errors as one line, stale temporaries removed."""
import gzip
from dataclasses import dataclass

import pytest

from deepsci.core.config import check_ranges, option
from deepsci.core.errors import ConfigError, InputError
from deepsci.core.io import atomic_path, reading, remove_stale_temporaries
from deepsci.core.runs import RunDir


@dataclass
class Inner:
    lr: float = option(1e-3, "Step size.", min=0.0, min_exclusive=True)


@dataclass
class Cfg:
    batch_size: int = option(32, "Examples per step.", min=1)
    fraction: float = option(0.5, "A fraction.", min=0.0, max=1.0)
    brightness: float = option(0.5, "Below one.", max=1.0, max_exclusive=True)
    mode: str = option("a", "Mode.", choices=("a", "b"))
    sizes: tuple[int, ...] = option((3, 3), "Sizes.", min=1)
    limit: int | None = option(None, "Optional.", min=1)
    inner: Inner = option(help="Inner.", factory=Inner)


@pytest.mark.parametrize("kw,message", [
    ({"batch_size": 0}, "expected --batch-size >= 1, found 0"),
    ({"fraction": 1.5}, "expected --fraction <= 1.0, found 1.5"),
    ({"brightness": 1.0}, "expected --brightness < 1.0, found 1.0"),
    ({"fraction": float("nan")}, "expected --fraction a number, found nan"),
    ({"mode": "c"}, "expected --mode a|b, found 'c'"),
    ({"sizes": (3, 0)}, "expected --sizes >= 1, found 0"),
    ({"limit": -2}, "expected --limit >= 1, found -2"),
    ({"inner": Inner(lr=0.0)}, "expected --lr > 0.0, found 0.0"),
])
def test_each_range_is_checked(kw, message):
    with pytest.raises(ConfigError) as e:
        check_ranges(Cfg(**kw))
    assert str(e.value) == message


def test_valid_config_passes_unchanged():
    cfg = Cfg(limit=None)
    check_ranges(cfg)
    assert cfg == Cfg()


def test_decoding_errors_become_one_line(tmp_path):
    bad = tmp_path / "calls.tsv.gz"
    bad.write_text("plain text")
    with pytest.raises(InputError) as e:
        with reading(bad, "a gzip-compressed table"):
            gzip.open(bad).read()
    assert str(e.value).startswith("expected a gzip-compressed table, found a file that does not decode")
    assert str(e.value).endswith(f"({bad})") and "\n" not in str(e.value)
    with pytest.raises(InputError, match="found no file"):
        with reading(tmp_path / "none.csv", "a CSV"):
            open(tmp_path / "none.csv").read()


def test_a_rerun_removes_what_an_interrupted_run_left(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    with pytest.raises(KeyboardInterrupt):
        with atomic_path(out / "model.keras") as tmp:
            tmp.write_text("half")
            leftover = tmp
            raise KeyboardInterrupt
    assert not leftover.exists()  # atomic_path cleans up after itself ...
    stale = out / ".model.ab12cd.tmp.keras"
    stale.write_text("half")  # ... but not after a SIGKILL
    (out / "keep.txt").write_text("user")
    with RunDir(out, command="x"):
        pass
    assert not stale.exists() and (out / "keep.txt").read_text() == "user"
    side = tmp_path / ".pred.zz.tmp.csv"
    side.write_text("half")
    other = tmp_path / ".other.zz.tmp.csv"
    other.write_text("half")
    with RunDir(tmp_path / "pred.csv", command="x", file_output=True):
        pass
    assert not side.exists() and other.exists()
    assert remove_stale_temporaries(tmp_path) == [other]
