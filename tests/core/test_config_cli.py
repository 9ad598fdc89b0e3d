"""Commands built from config dataclasses: defaults once, hidden options, --config re-runs."""
import dataclasses
import json
from dataclasses import dataclass, field

import pytest
import typer
from typer.testing import CliRunner

from deepsci.core.cli import MAX_SHOWN, config_command, flatten_fields
from deepsci.core.errors import ConfigError
from deepsci.core.runs import RunDir


@dataclass
class Inner:
    """Inner settings.

    Attributes
    ----------
    learning_rate : float
        Step size.
    """

    learning_rate: float = field(default=1e-3, metadata={"cli": "lr"})
    seed: int = 0
    layers: tuple[int, ...] = (4, 2)


@dataclass
class Cfg:
    """A command's config.

    Attributes
    ----------
    data : str
        The data file.
    out : str
        Output folder.
    """

    data: str
    out: str = "runs/x"
    seed: int = 1
    flag: bool = False
    names: list[str] | None = None
    inner: Inner = field(default_factory=lambda: Inner(learning_rate=0.5))

    def validate(self):
        if self.seed < 0:
            raise ConfigError(f"expected --seed >= 0, found {self.seed}")
        return self


app = typer.Typer()
seen = []


@config_command(app, Cfg, name="go", shown=["out", "lr", "seed"], arguments=["data"])
def go(cfg, opts):
    """Go somewhere."""
    seen.append((cfg, opts))
    with RunDir(cfg.out, command="t go", config=cfg, overwrite=opts.overwrite):
        pass


@app.command()
def other():
    pass


def _run(*args):
    seen.clear()
    result = CliRunner().invoke(app, ["go", *args], catch_exceptions=True)
    return result, (seen[0] if seen else None)


def test_fields_are_flattened_with_clash_prefixes():
    names = {f.cli: ".".join(f.path) for f in flatten_fields(Cfg)}
    assert names == {"data": "data", "out": "out", "seed": "seed", "flag": "flag", "names": "names",
                     "lr": "inner.learning_rate", "inner-seed": "inner.seed", "layers": "inner.layers"}


def test_defaults_come_from_the_dataclass_and_options_override(tmp_path):
    result, (cfg, opts) = _run("f.csv", "--out", str(tmp_path / "a"))
    assert result.exit_code == 0, result.output
    assert cfg == Cfg(data="f.csv", out=str(tmp_path / "a"))
    assert cfg.inner.learning_rate == 0.5  # the outer default_factory's value, not Inner's
    _, (cfg, _) = _run("f.csv", "--out", str(tmp_path / "b"), "--lr", "0.1", "--inner-seed", "5",
                       "--layers", "3,3", "--names", "a,b", "--flag")
    assert cfg.inner == Inner(learning_rate=0.1, seed=5, layers=(3, 3))
    assert cfg.names == ["a", "b"] and cfg.flag is True


def test_help_shows_only_the_chosen_options_and_names_the_rest():
    result = CliRunner().invoke(app, ["go", "--help"], terminal_width=200)
    shown = {w for w in result.output.split() if w.startswith("--")}
    assert {"--out", "--lr", "--seed", "--config", "--overwrite", "--progress", "--verbose",
            "--help"} <= shown
    tail = result.output[result.output.index("More options"):]
    for hidden in ("--flag", "--names", "--inner-seed", "--layers"):
        assert hidden in tail
    assert MAX_SHOWN == 10


def test_config_rerun_rebuilds_the_recorded_config_with_overrides(tmp_path):
    _run("f.csv", "--out", str(tmp_path / "a"), "--lr", "0.2", "--seed", "7", "--layers", "5")
    rec = json.loads((tmp_path / "a" / "run.json").read_text())
    assert rec["config"]["inner"]["learning_rate"] == 0.2
    result, (cfg, opts) = _run("--config", str(tmp_path / "a" / "run.json"), "--out",
                               str(tmp_path / "b"), "--seed", "9")
    assert result.exit_code == 0, result.output
    assert cfg == Cfg(data="f.csv", out=str(tmp_path / "b"), seed=9,
                      inner=Inner(learning_rate=0.2, layers=(5,)))
    assert opts.config == tmp_path / "a" / "run.json"


def test_missing_argument_and_bad_values_are_config_errors(tmp_path):
    result, _ = _run()
    assert isinstance(result.exception, ConfigError)
    assert str(result.exception) == "expected DATA (or --config run.json), found none"
    result, _ = _run("f.csv", "--seed", "-1")
    assert str(result.exception) == "expected --seed >= 0, found -1"
    result, _ = _run("f.csv", "--layers", "a,b")
    assert str(result.exception) == "expected --layers as comma-separated integers, found 'a,b'"


def test_too_many_shown_options_is_a_programming_error():
    with pytest.raises(ValueError, match="at most"):
        @dataclass
        class Big:
            a: int = 0; b: int = 0; c: int = 0; d: int = 0; e: int = 0; f: int = 0  # noqa: E702
            g: int = 0; h: int = 0; i: int = 0; j: int = 0; k: int = 0  # noqa: E702

            def validate(self):
                return self

        config_command(typer.Typer(), Big, name="x", shown=[f.name for f in dataclasses.fields(Big)])


def test_output_group_names_are_reserved():
    @dataclass
    class Sub:
        progress: bool = True

    @dataclass
    class Outer:
        sub: Sub = field(default_factory=Sub)

    assert [f.cli for f in flatten_fields(Outer)] == ["sub-progress"]

    @dataclass
    class Clash:
        overwrite: bool = False

    with pytest.raises(ValueError, match="output group"):
        flatten_fields(Clash)


def test_a_list_argument_takes_any_number_of_values(tmp_path):
    @dataclass
    class Many:
        model: str = ""
        images: list[str] | None = None

        def validate(self):
            return self

    many = typer.Typer()
    got = []

    @config_command(many, Many, name="predict", arguments=["model", "images"])
    def predict(cfg):
        got.append(cfg)

    @many.command()
    def other():
        pass

    result = CliRunner().invoke(many, ["predict", "m.keras", "a,1.jpeg", "b.jpeg"])
    assert result.exit_code == 0, result.output
    assert got[0] == Many(model="m.keras", images=["a,1.jpeg", "b.jpeg"])
