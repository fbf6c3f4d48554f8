"""The README's `lossbench-train` commands stay true: each one shown in a shell block composes
and passes every check (a multirun: its first job), without training. Commands that need
files or servers of the reader's (dataset=file, --config-dir, a Ray cluster) are covered by
their own tests."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser

from lossbench.config.checks import check_run

README = Path(__file__).parents[1] / "README.md"
NEEDS_MORE = (
    "dataset=file",
    "--config-dir",
    "hydra.launcher.executor",
    "mymetrics",
    "...",
    "--help",
)


def commands() -> list[str]:
    """Every `lossbench-train` command of the README's bash blocks (continuations joined)."""
    found = []
    for block in re.findall(r"```bash\n(.*?)```", README.read_text(), re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split("  #")[0].strip()
            if line.startswith("lossbench-train") and not any(m in line for m in NEEDS_MORE):
                found.append(line)
    return found


def first_job(args: list[str]) -> list[str]:
    """A multirun's first job: each swept value's first choice."""
    parser = OverridesParser.create()
    job = []
    for arg in args:
        [override] = parser.parse_overrides([arg])
        if override.is_sweep_override():
            value = next(iter(override.sweep_string_iterator()))
            job.append(f"{override.get_key_element()}={value}")
        else:
            job.append(arg)
    return job


def test_the_readme_shows_training_commands() -> None:
    assert len(commands()) >= 5


@pytest.mark.parametrize("command", commands())
def test_each_readme_command_composes_and_passes_the_checks(make_spec, command: str) -> None:  # noqa: ANN001
    args = [a for a in shlex.split(command)[1:] if a != "-m"]
    spec = make_spec([*first_job(args), "tracking=none"])
    check_run(spec)
