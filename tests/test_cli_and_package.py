import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

import equinet
from equinet.cli import main

ROOT = Path(__file__).resolve().parents[1]


def test_help_lists_the_subcommands(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    assert "info" in capsys.readouterr().out


@pytest.mark.parametrize("argv", [["bogus"], ["info", "--bogus"], []])
def test_command_line_mistakes_give_one_line_and_exit_2(capsys, argv):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("equinet: error:"), err


def test_info_prints_versions_and_conventions(capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert f"equinet {equinet.__version__}" in out
    assert "clebsch_gordan: e3nn.o3.wigner_3j" in out


def test_console_script_runs():
    result = subprocess.run(
        [str(Path(sys.executable).with_name("equinet")), "bogus"], capture_output=True, text=True
    )
    assert result.returncode == 2
    assert result.stderr.strip().startswith("equinet: error: argument COMMAND: invalid choice: 'bogus'")


def test_subpackages_install_under_equinet_only(tmp_path):
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert all(name == "equinet" or name.startswith("equinet.") for name in config["packages"])
    assert config["package-dir"] == {
        "equinet": "equinet",
        "equinet.ops": "ops",
        "equinet.datasets": "datasets",
        "equinet.potentials": "potentials",
    }
    # From outside the source tree, the installed package resolves the sub-packages and
    # installs no top-level `ops`, `datasets` or `potentials`.
    code = (
        "import importlib.util, equinet.ops, equinet.datasets, equinet.potentials;"
        "print([importlib.util.find_spec(n) is None for n in ('ops', 'datasets', 'potentials')])"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[True, True, True]"


def test_every_source_package_is_listed_for_installation():
    """A folder with an ``__init__.py`` missing from ``packages`` would work in an editable
    install and vanish from a wheel."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    roots = {folder: name for name, folder in config["package-dir"].items()}
    found = set()
    for folder, name in roots.items():
        for init in (ROOT / folder).rglob("__init__.py"):
            parts = init.parent.relative_to(ROOT / folder).parts
            found.add(".".join((name, *parts)))
    assert found == set(config["packages"])
