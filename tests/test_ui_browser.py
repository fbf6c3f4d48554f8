"""The MLflow UI in a real browser: after the demo sweep on two datasets and its report (as
`make demo`), headless Chromium finds the demo experiment and every one of its runs with their
datasets, opens the compare view of two, sees the report's across-problem table and each
problem's headline on the sweep's run page, and saves screenshots."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow import MlflowClient

from lossbench import report
from lossbench.ui import free_port, serving

sys.path.insert(0, str(Path(__file__).parents[1] / "scripts"))
from ui_screenshots import browse, chromium_path  # noqa: E402

pytest.importorskip("playwright", reason="the [browser] extra (playwright) is not installed")
if chromium_path() is None:
    pytest.skip(
        "Debian's chromium is not installed and could not be (make system-deps)",
        allow_module_level=True,
    )

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_browser_finds_the_demo_runs_compares_two_and_sees_the_sweeps_table(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cmd = [
        sys.executable, "-m", "lossbench.train", "experiment=demo", "trainer.max_epochs=3",
        "dataset.source.n_samples=200", f"hydra.sweep.dir={tmp_path / 'sweep'}",
        "dataset=moons,circles",  # two problems: the recipes are also compared across them
    ]  # fmt: skip
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri}
    done = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("demo")
    runs = {r.info.run_name: r.info.run_id for r in client.search_runs([experiment.experiment_id])}
    assert len(runs) == 37  # 36 runs and the sweep's run
    argv = ["--tracking-uri", uri, "--experiment", "demo", "--out", str(tmp_path / "report")]
    assert report.main(argv) == 0  # as `make demo`: the sweep's description gets the table
    built = report.build_report(uri, "demo")
    assert built.problem_axes == ["dataset"] and built.recipe_axes == ["loss", "optimizer"]
    header, rows = report.across_table(built, compact=True)

    pair = ["moons-cross_entropy-adam-constant-s0", "moons-focal-adam-constant-s0"]
    with serving(uri, free_port(), tmp_path / "ui.log") as address:
        assert address.startswith("http://127.0.0.1:")
        seen = browse(address, "demo", pair, tmp_path / "shots")

    assert sorted(seen["runs_table"]) == sorted(runs)  # every run, the sweep's included
    # the runs table's Dataset column shows each run's dataset input (name and digest)
    run = client.get_run(runs[pair[0]])
    digests = {i.dataset.digest for i in run.inputs.dataset_inputs}
    assert "Dataset" in seen["runs_text"] and digests
    assert any(digest in seen["runs_text"] for digest in digests), seen["runs_text"][:3000]
    assert seen["compare_heading"] == "Comparing 2 Runs from 1 Experiment"
    for name in pair:
        assert name in seen["compare_text"] and runs[name] in seen["compare_url"]
    # the sweep's run page shows the report's across-problem table first: every recipe, its
    # mean rank, each dataset's mean test/acc and rank, wins/ties/losses; the same cells
    assert header[:5] == ["loss", "optimizer", "mean rank", "dataset=circles", "dataset=moons"]
    assert len(rows) == 6 and seen["sweep_table"] == rows
    for problem in ("dataset=circles", "dataset=moons"):  # then each problem's headline
        assert f"{problem}: mean [95% CI] over seeds" in seen["sweep_text"]
    for shot in ("mlflow-runs.png", "mlflow-compare.png", "mlflow-sweep.png"):
        data = (tmp_path / "shots" / shot).read_bytes()
        assert data.startswith(PNG) and len(data) > 20_000, shot
