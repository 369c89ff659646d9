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


_ENV_ASSIGNMENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*=\S*")


def _readme_commands() -> list[tuple[list[str], list[str]]]:
    """(command path, the --options the line uses) for every `gmai ...` line of a bash block; a line may
    start with environment assignments (`GMAI_API_KEY=KEY gmai serve ...`)."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", README, flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            for part in line.split(";"):
                words = part.split("#")[0].split()
                while words and _ENV_ASSIGNMENT.fullmatch(words[0]):
                    words = words[1:]
                if len(words) >= 2 and words[0] == "gmai":
                    path = words[1:3] if words[1] in GROUPS and len(words) > 2 and not words[2].startswith("-") \
                        and words[2] in {"synth", "build", "score", "compare", "questions", "synth", "train",
                                         "iterate", "export", "rules", "benchmarks"} else words[1:2]
                    options = [w.split("=")[0] for w in words if w.startswith("--") and w != "--help"]
                    commands.append((path, options))
    return commands


def _command_paths() -> list[list[str]]:
    return [path for path, _ in _readme_commands()]


def test_readme_commands_after_environment_assignments_are_checked():
    assert ["serve"] in _command_paths()  # GMAI_API_KEY=KEY gmai serve ...
    assert (["serve"], ["--host", "--port"]) in _readme_commands()


def _option_names(command) -> set[str]:
    """Every --option of a click command; of a group, those of it and of its subcommands (a README line
    like `gmai eval MODEL --bench ...` reaches a subcommand through the group)."""
    names = {name for param in command.params for name in getattr(param, "opts", []) + getattr(param, "secondary_opts", [])}
    for sub in getattr(command, "commands", {}).values():
        names |= _option_names(sub)
    return names


@pytest.mark.parametrize("path,options", _readme_commands(), ids=lambda v: " ".join(v) if v else "-")
def test_readme_command_options_exist(path, options):
    import typer.main

    command = typer.main.get_command(app)
    for name in path:
        command = command.commands[name]
    assert [o for o in options if o not in _option_names(command)] == []


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


def test_demo_takes_another_vqa_rad_copy():
    """README: `gmai demo --vqa-rad PATH` points at another VQA-RAD copy (the path's checks: tests/test_demo.py)."""
    result = CliRunner().invoke(app, ["demo", "--help"])
    assert result.exit_code == 0 and "--vqa-rad" in result.output


SLOW_TIER = {  # README's Tests section: what `-m "not slow"` skips
    "the demo pipeline pieces and a shrunk whole demo": ["tests/test_demo.py", "tests/train/test_train_trainer.py",
                                                        "tests/data/test_build.py", "tests/rl/test_rl_grpo.py"],
    "2-process training": ["tests/train/test_train_distributed.py"],
    "the real server driven by the openai client": ["tests/serve/test_serve_openai_client.py"],
    "the browser test": ["tests/serve/test_serve_ui_browser.py"],
    "the real demo-ui process": ["tests/serve/test_serve_ui.py"],
}


@pytest.mark.slow  # collecting those modules imports the server, TRL and the browser driver: a minute or more
def test_readme_names_the_slow_tier_and_each_part_has_slow_tests():
    import subprocess
    import sys

    text = " ".join(README.split())
    assert "the real server driven by the `openai` client" in text and "a shrunk whole demo" in text
    files = [f for fs in SLOW_TIER.values() for f in fs]
    listed = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-m", "slow", *files],
                            cwd=ROOT, capture_output=True, text=True, timeout=300).stdout
    for part, paths in SLOW_TIER.items():
        for path in paths:
            assert f"{path}::" in listed, (part, path)
