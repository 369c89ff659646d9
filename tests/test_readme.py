"""The README's commands exist as written (litgpt-style README test): every `gmai ...` line's command
path answers --help, and the two set-up commands are Makefile targets."""

import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from gmai.cli import app

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
GROUPS = {"data", "eval", "rl"}


def _command_paths() -> list[list[str]]:
    paths = []
    for block in re.findall(r"```bash\n(.*?)```", README, flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            for part in line.split(";"):
                words = part.split("#")[0].split()
                if len(words) >= 2 and words[0] == "gmai":
                    path = words[1:3] if words[1] in GROUPS and len(words) > 2 and not words[2].startswith("-") \
                        and words[2] in {"synth", "build", "score", "compare", "questions", "synth", "train",
                                         "iterate", "export", "rules", "benchmarks"} else words[1:2]
                    paths.append(path)
    return paths


def test_readme_opens_with_the_two_make_commands():
    first_block = re.search(r"```bash\n(.*?)```", README, flags=re.S).group(1)
    assert "make demo" in first_block and "make test" in first_block
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^demo:", makefile, flags=re.M) and re.search(r"^test:", makefile, flags=re.M)


@pytest.mark.parametrize("path", _command_paths(), ids=" ".join)
def test_readme_command_exists(path):
    result = CliRunner().invoke(app, [*path, "--help"])
    assert result.exit_code == 0, result.output


def test_readme_lists_every_recipe_it_names():
    for name in re.findall(r"recipes/([\w.-]+\.yaml)", README):
        assert (ROOT / "recipes" / name).is_file(), name
