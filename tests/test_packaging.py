"""The set-up promises of the README: the commands CI runs, the torch pin and the open range.

Oracle: the files themselves. `.ci/run` must run the README's test command
verbatim (DEVELOPERS.md), the install steps pin the CPU build of torch that
the project's machines hold, and ``pyproject.toml`` keeps an open range so
that GPU users get their own build.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
CI_RUN = (ROOT / ".ci" / "run").read_text()
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def setup_commands() -> list[str]:
    """The one-line commands of the README's set-up section's ```bash blocks, in order."""
    section = README.split("## Set-up", 1)[1].split("\n## ", 1)[0]
    return [block.strip() for block in re.findall(r"```bash\n(.*?)```", section, flags=re.S)]


def test_readme_has_exactly_two_setup_commands():
    commands = setup_commands()
    assert len(commands) == 2, commands
    assert all("\n" not in c for c in commands), "each set-up command is one line"
    app, tests = commands
    assert "streamlit run app/streamlit_app.py" in app
    assert tests.endswith("-m pytest")


def test_ci_runs_the_readme_test_command():
    test_command = setup_commands()[1]
    ci_lines = [line.strip() for line in CI_RUN.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    assert test_command in ci_lines, f"{test_command!r} is not a line of .ci/run"


@pytest.mark.parametrize("which", [0, 1], ids=["app", "tests"])
def test_install_steps_pin_the_cpu_torch(which):
    assert "torch==2.13.0" in setup_commands()[which]


def test_pyproject_keeps_an_open_torch_range():
    torch_deps = [d for d in PROJECT["dependencies"] if re.match(r"torch\b", d)]
    assert torch_deps and all("==" not in d and "<" not in d for d in torch_deps), torch_deps


def test_extras_named_in_the_setup_commands_exist():
    extras = PROJECT["optional-dependencies"]
    for command in setup_commands():
        for group in re.findall(r'-e "\.\[([^\]]*)\]"', command):
            assert set(group.split(",")) <= set(extras), (group, sorted(extras))
