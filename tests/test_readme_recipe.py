"""README's "Benchmark your own recipe", run as written: the user's module, config and claim
files, then the commands (a real CLI run: the claims and repro commands are what is shown)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow import MlflowClient

README = Path(__file__).parents[1] / "README.md"


def section(title: str) -> str:
    text = README.read_text()
    start = text.index(f"### {title}\n")
    end = text.index("\n## ", start)
    nxt = text.find("\n### ", start + 1)
    return text[start : min(end, nxt) if nxt != -1 else end]


def code_blocks(text: str) -> list[tuple[str, str]]:
    """(language, body) of each fenced block."""
    return re.findall(r"```(\w+)\n(.*?)```", text, re.S)


@pytest.mark.slow
def test_the_own_recipe_example_runs_as_written(tmp_path: Path, store_uri: str) -> None:
    blocks = code_blocks(section("Benchmark your own recipe"))
    files = [(lang, body) for lang, body in blocks if lang in ("python", "yaml")]
    assert [body.splitlines()[0] for _, body in files] == [
        "# myopt.py", "# myconf/optimizer/normsgd.yaml", "# myclaims/U5.yaml",
    ]  # fmt: skip
    for _, body in files:
        path = tmp_path / body.splitlines()[0].removeprefix("# ")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(body)
    [commands] = [body for lang, body in blocks if lang == "bash"]
    bin_dir = Path(sys.executable).parent
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": store_uri,
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
    }
    claims, repro = [line for line in commands.splitlines() if line.startswith("lossbench-")]
    assert commands.splitlines()[0] == "export PYTHONPATH=$PWD"
    env["PYTHONPATH"] = str(tmp_path)
    done = subprocess.run(claims.split(), cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert re.search(r"1 claims: 1 (REPRODUCED|NOT REPRODUCED|INCONCLUSIVE)", done.stdout)
    client = MlflowClient(store_uri)
    experiment = client.get_experiment_by_name("mine")
    mine = client.search_runs(
        [experiment.experiment_id],
        "params.`optimizer._target_` = 'myopt.NormSGD' and tags.`lossbench.role` = 'run'",
    )
    assert len(mine) == 36 and {r.data.tags["lossbench.audit"] for r in mine} == {"passed"}
    command = repro.replace("RUN_ID", mine[0].info.run_id).split()
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert "IDENTICAL: every final metric equals the record" in done.stdout
