"""Benchmark: the standard 300-run sweep and the 300-run lr sweep through ``lossbench-train``,
against two references measured in the same invocation on a sample of the same configs.

Standard workload: moons (2,000 rows, noise 0.2), MLP 2x64 ReLU, batch 64, 50 epochs, per-epoch
metrics in MLflow; 4 losses x 5 optimizers x 3 schedulers x 5 seeds = 300 runs
(``conf/experiment/bench.yaml``). The lr workload: the same data and model, 5 optimizers x 6
learning rates each (around its usual lr) x 2 schedules x 5 seeds = 300 runs
(``conf/experiment/bench_lr.yaml``).

Each workload runs with the launcher's default stacks (``stack_by=recipe``: members may differ
in loss, optimizer, lr and schedule) and again with ``hydra.launcher.stack_by=seed_loss`` (members
differ only in seed and loss, as before recipe stacks); the standard one also with
``tracking.sql_batches=true``.

References, one run at a time in this process, timed per run and extrapolated to the sweep's
run count (their one-time imports are left out, which favours them):
  (a) naive: a Lightning Trainer with Lightning's MLFlowLogger logging every step, a DataLoader,
      default checkpointing, as lightning-hydra-template sets things up;
  (b) plain: a hand-written PyTorch loop on in-memory tensors with per-epoch validation and no
      tracking.

It also times how long ``lossbench-train`` takes to fail on an unreachable tracking store
(``tracking.uri=http://127.0.0.1:9``), instead of MLflow's minutes of retries.

    python scripts/bench_sweep.py                      # both workloads, both stack groupings
    python scripts/bench_sweep.py --json bench.json    # also write the figures
    python scripts/bench_sweep.py --runs 60 --epochs 20
    python scripts/bench_sweep.py --runs 20 --epochs 2 --skip references unreachable   # a smoke run
    python scripts/bench_sweep.py --growth             # time vs runs, rows and epochs -> PNG
    python scripts/bench_sweep.py --overheads-only     # a sweep's fixed cost, compose+check
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import psutil
import yaml

LOSSES = ["cross_entropy", "focal", "mse", "hinge"]
OPTIMIZERS = ["sgd", "momentum", "rmsprop", "adam", "adamw"]
SCHEDULERS = ["constant", "step", "cosine"]
SEEDS = 5
LR_OPTIMIZERS = ["sgd", "momentum", "rmsprop", "adam", "adamw"]
LR_SCHEDULERS = ["constant", "cosine"]
BENCH_LR = Path(__file__).resolve().parents[1] / "conf" / "experiment" / "bench_lr.yaml"
# the lr workload's swept optimizer.lr values, as the preset writes them
LR_VALUES = yaml.safe_load(BENCH_LR.read_text())["hydra"]["sweeper"]["params"]["optimizer.lr"]
TARGETS = {
    "sweep_seconds": 30.0,
    "speedup_vs_naive": 100.0,
    "speedup_vs_plain": 6.0,
    "lr_speedup_vs_seed_stacks": 3.0,  # the lr workload: stack_by=seed_loss time / recipe time
    "mlflow_share": 0.15,  # through MLflow's API (the default)
    "sql_batches_mlflow_share": 0.15,  # with tracking.sql_batches=true
    "peak_rss_mb": 2048.0,  # the standard sweep: all its processes together
    "unreachable_store_seconds": 60.0,
    "fixed_cost_seconds": 6.0,
    "compose_check_seconds_300": 2.0,
    "compose_check_seconds_1500": 5.0,
}
AT_MOST = (
    "sweep_seconds",
    "mlflow_share",
    "sql_batches_mlflow_share",
    "peak_rss_mb",
    "unreachable_store_seconds",
    "fixed_cost_seconds",
    "compose_check_seconds_300",
    "compose_check_seconds_1500",
)  # other targets: >=
PARTS = (
    "sql_batches",
    "lr",
    "seed_loss",
    "references",
    "unreachable",
    "overheads",
)  # what --skip can skip


@dataclass
class Workload:
    """One variant of the standard workload (``experiment=bench``) or of the lr workload
    (``lr=True``: ``experiment=bench_lr``), stacked by ``stack_by``."""

    runs: int = 300
    rows: int = 2000
    epochs: int = 50
    lr: bool = False
    stack_by: str = "recipe"

    @property
    def experiment(self) -> str:
        """The preset, which is also its MLflow experiment."""
        return "bench_lr" if self.lr else "bench"

    def grid(self) -> tuple[list[str], list[str], list[str]]:
        """The first losses, optimizers and schedulers giving ``runs`` runs with 5 seeds each."""
        for n_loss, n_sched, n_opt in itertools.product((4, 3, 2, 1), (3, 2, 1), (5, 4, 3, 2, 1)):
            if n_loss * n_opt * n_sched * SEEDS == self.runs:
                return LOSSES[:n_loss], OPTIMIZERS[:n_opt], SCHEDULERS[:n_sched]
        valid = sorted(
            {a * b * c * SEEDS for a in range(1, 5) for b in range(1, 6) for c in range(1, 4)}
        )
        raise SystemExit(f"--runs {self.runs}: choose one of {valid}")

    def lr_grid(self) -> tuple[list[str], list[str], list[str]]:
        """The first optimizers, lr values and schedulers of the lr workload giving ``runs``
        runs with 5 seeds each (as many lr values as possible)."""
        values = LR_VALUES.split(",")
        for n_lr, n_sched, n_opt in itertools.product((6, 5, 4, 3, 2, 1), (2, 1), (5, 4, 3, 2, 1)):
            if n_opt * n_lr * n_sched * SEEDS == self.runs:
                return LR_OPTIMIZERS[:n_opt], values[:n_lr], LR_SCHEDULERS[:n_sched]
        valid = sorted(
            {a * b * c * SEEDS for a in range(1, 6) for b in range(1, 7) for c in range(1, 3)}
        )
        raise SystemExit(f"--runs {self.runs} for the lr workload: choose one of {valid}")

    def overrides(self) -> list[str]:
        """Command-line overrides of the preset for this variant."""
        common = [
            f"experiment={self.experiment}",
            f"dataset.source.n_samples={self.rows}",
            f"trainer.max_epochs={self.epochs}",
            f"hydra.launcher.stack_by={self.stack_by}",
        ]
        if self.lr:
            optimizers, lrs, schedulers = self.lr_grid()
            return [
                *common,
                f"hydra.sweeper.params.optimizer='{','.join(optimizers)}'",
                f"hydra.sweeper.params.scheduler='{','.join(schedulers)}'",
                f"optimizer.lr={','.join(lrs)}",  # replaces the preset's list (a dotted key)
            ]
        losses, optimizers, schedulers = self.grid()
        return [
            *common,
            f"hydra.sweeper.params.loss='{','.join(losses)}'",
            f"hydra.sweeper.params.optimizer='{','.join(optimizers)}'",
            f"hydra.sweeper.params.scheduler='{','.join(schedulers)}'",
        ]


@dataclass
class SweepMeasure:
    """What one sweep through the product cost."""

    seconds: float
    peak_rss_mb: float
    rss_by_runs: list[tuple[int, float, float]] = field(default_factory=list)  # main, max worker
    summary: dict[str, Any] = field(default_factory=dict)
    finished: int = 0
    complete: int = 0  # finished runs with every epoch's metrics
    diverged: int = 0  # recorded FAILED with lossbench.status=diverged: a result too

    def all_recorded(self, runs: int) -> bool:
        """Every run recorded: finished with every epoch's metrics, or diverged."""
        return self.finished == self.complete and self.finished + self.diverged == runs


def rss_mb(proc: psutil.Process) -> tuple[float, list[float]]:
    """Resident memory of a process and of each of its children, in MB."""
    sizes = []
    for p in [proc, *proc.children(recursive=True)]:
        with contextlib.suppress(psutil.Error):
            sizes.append(p.memory_info().rss / 2**20)
    return (sizes[0] if sizes else 0.0), sizes[1:]


def tree_rss_mb(proc: psutil.Process) -> float:
    """Resident memory of a process and all its children, in MB."""
    main, children = rss_mb(proc)
    return main + sum(children)


def run_sweep(
    work: Workload, workdir: Path, verbose: bool, sql_batches: bool = False
) -> SweepMeasure:
    """Run the workload through ``lossbench-train`` into a fresh store and measure it; MLflow
    writes go through its API, or with ``sql_batches`` through lossbench's batched SQL path."""
    path = "sql" if sql_batches else "api"
    store = workdir / (
        f"store-{work.experiment}-{work.stack_by}-{work.runs}-{work.rows}-{work.epochs}-{path}"
    )
    sweep_dir = store / "multirun"
    uri = f"sqlite:///{store / 'mlflow.db'}"
    cmd = [
        sys.executable,
        "-m",
        "lossbench.train",
        *work.overrides(),
        f"tracking.sql_batches={str(sql_batches).lower()}",
        f"hydra.sweep.dir={sweep_dir}",
    ]
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri}
    start = time.perf_counter()
    proc = subprocess.Popen(
        cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    ps = psutil.Process(proc.pid)
    peak, rss_by_runs, lines = 0.0, [], []
    stop = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not stop.is_set():
            peak = max(peak, tree_rss_mb(ps))
            time.sleep(0.1)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    assert proc.stdout is not None
    for line in proc.stdout:
        lines.append(line)
        if verbose:
            print("   |", line.rstrip())
        done = re.search(r"\] \[(\d+)/(\d+)\]", line)
        if done:
            main, children = rss_mb(ps)
            rss_by_runs.append((int(done.group(1)), main, max(children, default=0.0)))
    proc.wait()
    seconds = time.perf_counter() - start
    stop.set()
    sampler.join()
    if proc.returncode != 0:
        sys.stdout.writelines(lines[-40:])
        raise SystemExit(f"the sweep failed (exit {proc.returncode})")
    summary = json.loads((sweep_dir / "lossbench-summary.json").read_text())
    measure = SweepMeasure(seconds, peak, rss_by_runs, summary)
    measure.finished, measure.complete, measure.diverged = count_complete(
        uri, work.epochs, work.experiment
    )
    return measure


def count_complete(uri: str, epochs: int, experiment_name: str = "bench") -> tuple[int, int, int]:
    """(FINISHED runs, FINISHED runs with ``epochs`` values of every per-epoch metric,
    diverged runs)."""
    from mlflow import MlflowClient

    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name(experiment_name)
    runs = client.search_runs(
        [experiment.experiment_id], "tags.`lossbench.role` = 'run'", max_results=50_000
    )
    diverged = sum(r.data.tags.get("lossbench.status") == "diverged" for r in runs)
    finished = [r for r in runs if r.info.status == "FINISHED"]
    complete = 0
    for run in finished:
        lengths = {
            len(client.get_metric_history(run.info.run_id, key))
            for key in ("train/loss", "val/loss", "val/acc", "lr", "train/grad_norm")
        }
        complete += lengths == {epochs}
    return len(finished), complete, diverged


def time_unreachable_store(workdir: Path) -> float:
    """Seconds until a small sweep into an unreachable store fails (it must, with a message
    naming the store, before training anything)."""
    cmd = [
        sys.executable, "-m", "lossbench.train", "-m", "seed=0,1", "trainer.max_epochs=3",
        "dataset.source.n_samples=200", "tracking.uri=http://127.0.0.1:9",
        f"hydra.sweep.dir={workdir / 'unreachable'}",
    ]  # fmt: skip
    start = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    seconds = time.perf_counter() - start
    if done.returncode == 0 or "http://127.0.0.1:9 is unreachable" not in done.stdout + done.stderr:
        sys.stdout.write((done.stdout + done.stderr)[-3000:])
        raise SystemExit("lossbench-train did not fail as it should on an unreachable store")
    return seconds


# ---------------------------------------------------------------------------------------------
# Overheads


def measure_overheads(workdir: Path, verbose: bool, repeats: int = 3) -> dict[str, Any]:
    """A sweep's fixed cost, and the time to compose and check a sweep's jobs.

    - ``fixed_cost_seconds``: a 20-run sweep (``experiment=bench optimizer=adam
      scheduler=constant``, 4 losses x 5 seeds, 10 epochs, a fresh SQLite store): the wall time
      of the ``lossbench-train`` process, start to exit, minus the ``train_seconds`` its
      launcher reports (training and recording, from the end of the checks to the last run
      recorded). What remains: process start, imports, Hydra, starting the worker pool,
      composing, checking, shutting down. The least of ``repeats`` sweeps (other load on the
      machine only adds to it).
    - ``compose_check_seconds_300`` and ``_1500``: ``compose_seconds + check_seconds`` from the
      launcher's summary of ``experiment=bench`` (300 runs) and of the same over 5 learning
      rates (1,500 runs), run cheaply: 1 epoch, ``tracking=none``. Waiting for the workers'
      imports is reported apart (``worker_wait_seconds``): it is part of the fixed cost.
    """
    fixed = []
    for i in range(repeats):
        store = workdir / f"overhead-{i}"
        cmd = [
            sys.executable, "-m", "lossbench.train", "-m", "experiment=bench", "optimizer=adam",
            "scheduler=constant", "loss=cross_entropy,focal,mse,hinge", "seed=0,1,2,3,4",
            "trainer.max_epochs=10", f"tracking.uri=sqlite:///{store / 'mlflow.db'}",
            f"hydra.sweep.dir={store / 'multirun'}",
        ]  # fmt: skip
        start = time.perf_counter()
        done = subprocess.run(cmd, capture_output=not verbose, text=True, timeout=900)
        seconds = time.perf_counter() - start
        if done.returncode != 0:
            sys.stdout.write((done.stdout or "")[-3000:] + (done.stderr or "")[-3000:])
            raise SystemExit(f"the 20-run sweep failed (exit {done.returncode})")
        summary = json.loads((store / "multirun" / "lossbench-summary.json").read_text())
        fixed.append(round(seconds - summary["train_seconds"], 2))
    compose_check = {}
    for runs, lrs in ((300, []), (1500, ["optimizer.lr=0.001,0.003,0.01,0.03,0.1"])):
        sweep_dir = workdir / f"compose-check-{runs}"
        cmd = [sys.executable, "-m", "lossbench.train", "experiment=bench", *lrs,
               "trainer.max_epochs=1", "tracking=none", f"hydra.sweep.dir={sweep_dir}"]  # fmt: skip
        done = subprocess.run(cmd, capture_output=not verbose, text=True, timeout=1800)
        if done.returncode != 0:
            sys.stdout.write((done.stdout or "")[-3000:] + (done.stderr or "")[-3000:])
            raise SystemExit(f"the {runs}-run sweep failed (exit {done.returncode})")
        summary = json.loads((sweep_dir / "lossbench-summary.json").read_text())
        assert summary["runs"] == runs, summary
        compose_check[runs] = summary
    figures = {
        "fixed_cost_seconds": min(fixed),
        "fixed_cost_seconds_all": fixed,
        **{
            f"compose_check_seconds_{runs}": round(s["compose_seconds"] + s["check_seconds"], 2)
            for runs, s in compose_check.items()
        },
        "compose_check_summaries": {str(runs): s for runs, s in compose_check.items()},
    }
    print(f"Fixed cost of a 20-run sweep (wall time minus training and recording): "
          f"{figures['fixed_cost_seconds']:.1f} s (least of {fixed})")  # fmt: skip
    for runs, s in compose_check.items():
        print(f"Composing + checking {runs} runs: {s['compose_seconds']:.2f} s + "
              f"{s['check_seconds']:.2f} s (waiting for the workers' imports in between: "
              f"{s.get('worker_wait_seconds', 0):.1f} s)")  # fmt: skip
    return figures


# ---------------------------------------------------------------------------------------------
# References


def sample_configs(work: Workload, n: int) -> list[dict[str, Any]]:
    """``n`` configs of the workload, spread over losses, optimizers and schedulers."""
    from hydra import compose, initialize_config_dir

    from lossbench.config.spec import CONF_DIR, RunSpec

    losses, optimizers, schedulers = work.grid()
    combos = list(itertools.product(losses, optimizers, schedulers))
    picked = [combos[round(i * (len(combos) - 1) / max(n - 1, 1))] for i in range(n)]
    specs = []
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        for i, (loss, optimizer, scheduler) in enumerate(picked):
            overrides = [
                "experiment=bench", f"loss={loss}", f"optimizer={optimizer}",
                f"scheduler={scheduler}", f"seed={i % SEEDS}",
                f"dataset.source.n_samples={work.rows}", f"trainer.max_epochs={work.epochs}",
            ]  # fmt: skip
            specs.append(
                RunSpec.from_hydra_config(compose("train", overrides, return_hydra_config=True)).cfg
            )
    return specs


def plain_mlp(n_in: int, n_out: int) -> Any:
    """The workload's MLP as ordinary torch layers."""
    from torch import nn

    return nn.Sequential(
        nn.Linear(n_in, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, n_out)
    )


def plain_run(cfg: dict[str, Any]) -> float:
    """Reference (b): a plain PyTorch loop, in-memory tensors, per-epoch validation, no tracking."""
    import torch

    from lossbench.config.spec import build
    from lossbench.problem.data import load_dataset

    torch.manual_seed(cfg["seed"])
    data = load_dataset(cfg["dataset"], cfg["data_seed"])
    x, y = torch.from_numpy(data.x_train), torch.from_numpy(data.y_train)
    xv, yv = torch.from_numpy(data.x_val), torch.from_numpy(data.y_val)
    model = plain_mlp(data.n_features, data.n_outputs)
    loss_fn = build(cfg["loss"])
    optimizer = build(cfg["optimizer"])(model.parameters())
    epochs, batch = cfg["trainer"]["max_epochs"], cfg["batch_size"]
    steps = -(-len(y) // batch)
    schedule = build(cfg["scheduler"])(optimizer, max_epochs=epochs, steps_per_epoch=steps)
    start = time.perf_counter()
    for _ in range(epochs):
        model.train()
        for idx in torch.randperm(len(y)).split(batch):
            loss = loss_fn(model(x[idx])[None], y[idx][None]).sum()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            if schedule["interval"] == "step":
                schedule["scheduler"].step()
        if schedule["interval"] == "epoch":
            schedule["scheduler"].step()
        model.eval()
        with torch.no_grad():
            out = model(xv)
            loss_fn(out[None], yv[None])
            ((out[:, 0] > 0).long() == yv).float().mean()
    return time.perf_counter() - start


def naive_run(cfg: dict[str, Any], uri: str, workdir: Path) -> float:
    """Reference (a): Lightning + MLFlowLogger logging every step, DataLoader, checkpoints."""
    import pytorch_lightning as pl
    import torch
    from pytorch_lightning.loggers import MLFlowLogger
    from torch.utils.data import DataLoader, TensorDataset

    from lossbench.config.spec import build
    from lossbench.problem.data import load_dataset

    data = load_dataset(cfg["dataset"], cfg["data_seed"])
    epochs, batch = cfg["trainer"]["max_epochs"], cfg["batch_size"]

    class Naive(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = plain_mlp(data.n_features, data.n_outputs)
            self.loss_fn = build(cfg["loss"])

        def training_step(self, b: Any, i: int) -> Any:
            xb, yb = b
            loss = self.loss_fn(self.net(xb)[None], yb[None]).sum()
            self.log("train/loss", loss, on_step=True, on_epoch=True)
            return loss

        def validation_step(self, b: Any, i: int) -> None:
            xb, yb = b
            out = self.net(xb)
            self.log("val/loss", self.loss_fn(out[None], yb[None]).sum(), on_epoch=True)
            self.log("val/acc", ((out[:, 0] > 0).long() == yb).float().mean(), on_epoch=True)

        def configure_optimizers(self) -> Any:
            optimizer = build(cfg["optimizer"])(self.parameters())
            steps = -(-len(data.y_train) // batch)
            schedule = build(cfg["scheduler"])(optimizer, max_epochs=epochs, steps_per_epoch=steps)
            return {"optimizer": optimizer, "lr_scheduler": schedule}

    pl.seed_everything(cfg["seed"], verbose=False)
    tensors = lambda x, y: TensorDataset(torch.from_numpy(x), torch.from_numpy(y))  # noqa: E731
    train = DataLoader(tensors(data.x_train, data.y_train), batch_size=batch, shuffle=True)
    val = DataLoader(tensors(data.x_val, data.y_val), batch_size=batch)
    start = time.perf_counter()
    logger = MLFlowLogger(experiment_name="naive", tracking_uri=uri)
    trainer = pl.Trainer(
        max_epochs=epochs, logger=logger, log_every_n_steps=1, enable_progress_bar=False,
        default_root_dir=str(workdir / "naive"), accelerator="cpu", devices=1,
        enable_model_summary=False,  # its table would clutter the output; it costs little
    )  # fmt: skip
    trainer.fit(Naive(), train, val)
    return time.perf_counter() - start


def measure_references(
    work: Workload, workdir: Path, n_naive: int, n_plain: int
) -> dict[str, float]:
    """Mean seconds per run of each reference, after one warm-up run."""
    import logging
    import warnings

    import torch

    torch.set_num_threads(1)
    logging.getLogger("pytorch_lightning").setLevel(logging.ERROR)
    logging.getLogger("lightning").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    uri = f"sqlite:///{workdir / 'naive.db'}"
    configs = sample_configs(work, max(n_naive, n_plain))
    plain_run(configs[0])  # warm-up: first-call costs are not per-run costs
    plain = [plain_run(c) for c in configs[:n_plain]]
    naive_run(configs[0], uri, workdir)
    naive = [naive_run(c, uri, workdir) for c in configs[:n_naive]]
    return {"plain": sum(plain) / len(plain), "naive": sum(naive) / len(naive)}


# ---------------------------------------------------------------------------------------------


def growth(workdir: Path, verbose: bool, plot: Path) -> list[dict[str, Any]]:
    """Sweep time as runs, rows and epochs grow one at a time from a small base; writes a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    axes = {
        "runs": [Workload(runs=r, epochs=10) for r in (20, 60, 150, 300)],
        "rows": [Workload(runs=20, rows=r, epochs=10) for r in (2_000, 20_000, 200_000)],
        "epochs": [Workload(runs=20, epochs=e) for e in (10, 50, 100)],
    }
    points = []
    fig, panels = plt.subplots(1, 3, figsize=(13, 4))
    for panel, (axis, variants) in zip(panels, axes.items(), strict=True):
        xs, ys = [], []
        for work in variants:
            m = run_sweep(work, workdir / "growth", verbose)
            print(f"  {axis}: runs={work.runs} rows={work.rows} epochs={work.epochs}: "
                  f"{m.seconds:.1f}s, peak RSS {m.peak_rss_mb:.0f} MB")  # fmt: skip
            points.append(
                {"axis": axis, **work.__dict__, "seconds": m.seconds, "peak_rss_mb": m.peak_rss_mb}
            )
            xs.append(getattr(work, axis))
            ys.append(m.seconds)
        panel.plot(xs, ys, marker="o")
        panel.set_xlabel(axis)
        panel.set_ylabel("sweep wall time (s)")
        if axis == "rows":
            panel.set_xscale("log")
        panel.set_title(f"time vs {axis}")
        panel.grid(alpha=0.3)
    fig.suptitle("lossbench sweep cost (base: 20 runs, 2,000 rows, 10 epochs)")
    fig.tight_layout()
    fig.savefig(plot, dpi=120)
    print(f"growth plot: {plot}")
    return points


def main() -> int:
    """Run the benchmark and print (and optionally write) its figures."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=300, help="runs per sweep (default 300)")
    parser.add_argument("--rows", type=int, default=2000, help="dataset rows (default 2000)")
    parser.add_argument("--epochs", type=int, default=50, help="epochs per run (default 50)")
    parser.add_argument("--naive-sample", type=int, default=3, help="runs timed for reference (a)")
    parser.add_argument("--plain-sample", type=int, default=5, help="runs timed for reference (b)")
    parser.add_argument(
        "--skip", nargs="+", choices=PARTS, default=[], metavar="PART",
        help=f"leave parts out, e.g. for a quick smoke run: {', '.join(PARTS)} (the standard "
        "sweep always runs; figures and targets of skipped parts are left out)",
    )  # fmt: skip
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    parser.add_argument("--growth", action="store_true", help="also time variants and plot growth")
    parser.add_argument(
        "--plot", type=Path, default=Path("bench_growth.png"), help="growth PNG path"
    )
    parser.add_argument("--workdir", type=Path, help="where stores go (default: a temp dir)")
    parser.add_argument("--verbose", action="store_true", help="show the sweep's own output")
    parser.add_argument(
        "--overheads-only", action="store_true", help="only the fixed cost and compose+check"
    )
    args = parser.parse_args()
    skip = set(args.skip)

    work = Workload(args.runs, args.rows, args.epochs)
    lr_work = Workload(args.runs, args.rows, args.epochs, lr=True)
    grids = [work.grid()] + ([] if "lr" in skip else [lr_work.lr_grid()])  # bad --runs: now
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="lossbench-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    if args.overheads_only:
        overheads = measure_overheads(workdir, args.verbose)
        for key in (
            "fixed_cost_seconds",
            "compose_check_seconds_300",
            "compose_check_seconds_1500",
        ):
            met = "met" if overheads[key] <= TARGETS[key] else "NOT MET"
            print(f"  target {key} <= {TARGETS[key]}: {overheads[key]} {met}")
        if args.json:
            args.json.write_text(json.dumps(overheads, indent=2))
        return 0
    print(f"Workload: {work.runs} runs (losses x optimizers x schedulers x {SEEDS} seeds = "
          f"{' x '.join(str(len(g)) for g in grids[0])} x {SEEDS}), moons {work.rows} rows, "
          f"MLP 2x64, batch 64, {work.epochs} epochs. Stores under {workdir}")  # fmt: skip
    if "lr" not in skip:
        print(f"lr workload: {lr_work.runs} runs (optimizers x lrs x schedulers x {SEEDS} seeds = "
              f"{' x '.join(str(len(g)) for g in grids[1])} x {SEEDS}), the same data and model")  # fmt: skip

    sweeps: dict[str, tuple[Workload, SweepMeasure]] = {}

    def measure(name: str, what: str, variant: Workload, sql_batches: bool = False) -> None:
        print(f"{what} ...", flush=True)
        sweeps[name] = (variant, run_sweep(variant, workdir, args.verbose, sql_batches))

    measure(
        "standard",
        "Sweep through lossbench-train (MLflow writes through its API, the default)",
        work,
    )
    if "sql_batches" not in skip:
        measure("sql", "The same sweep with tracking.sql_batches=true", work, sql_batches=True)
    if "lr" not in skip:
        measure("lr", "The lr workload (experiment=bench_lr)", lr_work)
    if "seed_loss" not in skip:
        measure("seed_loss", "The standard sweep with hydra.launcher.stack_by=seed_loss",
                replace(work, stack_by="seed_loss"))  # fmt: skip
        if "lr" not in skip:
            measure("lr_seed_loss", "The lr workload with hydra.launcher.stack_by=seed_loss",
                    replace(lr_work, stack_by="seed_loss"))  # fmt: skip
    ref: dict[str, float] = {}
    if "references" not in skip:
        print(f"Reference runs: naive x{args.naive_sample}, plain x{args.plain_sample} ...", flush=True)  # fmt: skip
        ref = measure_references(work, workdir, args.naive_sample, args.plain_sample)
    unreachable = None
    if "unreachable" not in skip:
        print("An unreachable store ...", flush=True)
        unreachable = time_unreachable_store(workdir)

    sweep = sweeps["standard"][1]
    overheads: dict[str, Any] = {}
    if "overheads" not in skip:
        print("Fixed cost, composing and checking ...", flush=True)
        overheads = measure_overheads(workdir, args.verbose)

    share = sweep.summary["mlflow_seconds"] / sweep.seconds
    first_rss = sweep.rss_by_runs[0] if sweep.rss_by_runs else (0, 0.0, 0.0)
    last_rss = sweep.rss_by_runs[-1] if sweep.rss_by_runs else (0, 0.0, 0.0)
    figures: dict[str, Any] = {
        "sweep_seconds": round(sweep.seconds, 2),
        "runs_finished": sweep.finished,
        "runs_complete": sweep.complete,
        "runs": work.runs,
        "runs_per_minute": round(work.runs / sweep.seconds * 60, 1),
        "stacks": sweep.summary["stacks"],
        "mlflow_seconds": sweep.summary["mlflow_seconds"],
        "mlflow_share": round(share, 4),
        "peak_rss_mb": round(sweep.peak_rss_mb, 1),
        "rss_mb_by_runs_done": [
            {"runs": n, "main": round(main, 1), "largest_worker": round(worker, 1)}
            for n, main, worker in sweep.rss_by_runs
        ],
        "launcher": sweep.summary,
        **overheads,
    }
    if ref:
        naive_total, plain_total = ref["naive"] * work.runs, ref["plain"] * work.runs
        figures.update({
            "speedup_vs_naive": round(naive_total / sweep.seconds, 2),
            "speedup_vs_plain": round(plain_total / sweep.seconds, 2),
            "naive_seconds_per_run": round(ref["naive"], 3),
            "plain_seconds_per_run": round(ref["plain"], 3),
        })  # fmt: skip
    if "sql" in sweeps:
        sql = sweeps["sql"][1]
        figures.update({
            "sql_batches_sweep_seconds": round(sql.seconds, 2),
            "sql_batches_mlflow_seconds": sql.summary["mlflow_seconds"],
            "sql_batches_mlflow_share": round(sql.summary["mlflow_seconds"] / sql.seconds, 4),
        })  # fmt: skip
    for name, prefix in (
        ("lr", "lr_"),
        ("seed_loss", "seed_loss_"),
        ("lr_seed_loss", "lr_seed_loss_"),
    ):
        if name in sweeps:
            m = sweeps[name][1]
            figures.update({
                f"{prefix}sweep_seconds": round(m.seconds, 2),
                f"{prefix}stacks": m.summary["stacks"],
                f"{prefix}runs_finished": m.finished,
                f"{prefix}runs_diverged": m.diverged,
                f"{prefix}peak_rss_mb": round(m.peak_rss_mb, 1),
                f"{prefix}launcher": m.summary,
            })  # fmt: skip
    if "seed_loss" in sweeps:
        figures["speedup_vs_seed_stacks"] = round(sweeps["seed_loss"][1].seconds / sweep.seconds, 2)
    if "lr" in sweeps and "lr_seed_loss" in sweeps:
        figures["lr_speedup_vs_seed_stacks"] = round(
            sweeps["lr_seed_loss"][1].seconds / sweeps["lr"][1].seconds, 2
        )
    if unreachable is not None:
        figures["unreachable_store_seconds"] = round(unreachable, 2)

    print()
    print(f"Sweep: {sweep.seconds:.1f} s wall for {work.runs} runs = {figures['runs_per_minute']:.0f} runs/min "
          f"({sweep.summary['stacks']} stacked fits on {sweep.summary['workers']} workers; composing "
          f"{sweep.summary['compose_seconds']:.1f} s, checking {sweep.summary['check_seconds']:.1f} s, "
          f"training and recording {sweep.summary['train_seconds']:.1f} s)")  # fmt: skip
    for name, what in (
        ("seed_loss", "  with stack_by=seed_loss"),
        ("lr", "lr workload"),
        ("lr_seed_loss", "  with stack_by=seed_loss"),
    ):
        if name in sweeps:
            m = sweeps[name][1]
            print(f"{what}: {m.seconds:.1f} s wall ({m.summary['stacks']} stacked fits; composing "
                  f"{m.summary['compose_seconds']:.1f} s, checking {m.summary['check_seconds']:.1f} s, "
                  f"training and recording {m.summary['train_seconds']:.1f} s)")  # fmt: skip
    if "speedup_vs_seed_stacks" in figures:
        print(f"Recipe stacks vs seed-and-loss stacks: {figures['speedup_vs_seed_stacks']:.2f}x "
              "(standard)" + (f", {figures['lr_speedup_vs_seed_stacks']:.2f}x (lr workload)"
                              if "lr_speedup_vs_seed_stacks" in figures else ""))  # fmt: skip
    if ref:
        print(f"(a) naive Lightning + MLFlowLogger per step: {ref['naive']:.2f} s/run x {work.runs} runs = "
              f"{naive_total:.0f} s  ->  speed-up {figures['speedup_vs_naive']:.1f}x")  # fmt: skip
        print(f"(b) plain PyTorch loop, no tracking:         {ref['plain']:.2f} s/run x {work.runs} runs = "
              f"{plain_total:.0f} s  ->  speed-up {figures['speedup_vs_plain']:.1f}x")  # fmt: skip
        print(
            "    (references: mean time per run over their sample, after a warm-up run, times the run "
            "count; their imports are not counted)"
        )
    print(
        f"MLflow: {sweep.summary['mlflow_seconds']:.1f} s of calls = {share:.1%} of the sweep's wall time"
    )
    if "sql" in sweeps:
        sql = sweeps["sql"][1]
        print(f"  with tracking.sql_batches=true: {sql.summary['mlflow_seconds']:.1f} s of calls = "
              f"{figures['sql_batches_mlflow_share']:.1%} of that sweep's {sql.seconds:.1f} s")  # fmt: skip
    print(
        f"Peak RSS of the sweep (main process, fork server and workers together): "
        f"{sweep.peak_rss_mb:.0f} MB"
    )
    print(
        f"  largest worker: {first_rss[2]:.0f} MB after {first_rss[0]} runs, {last_rss[2]:.0f} MB "
        f"after {last_rss[0]}; main process: {first_rss[1]:.0f} MB, then {last_rss[1]:.0f} MB "
        "(Hydra keeps every job's JobReturn until the sweep ends)"
    )
    if unreachable is not None:
        print(f"Unreachable store: lossbench-train ... tracking.uri=http://127.0.0.1:9 failed, naming it, "
              f"in {unreachable:.1f} s")  # fmt: skip
    ok = True
    for name, (variant, m) in sweeps.items():
        print(f"Check ({name}): {m.finished}/{variant.runs} runs FINISHED, {m.complete} with "
              f"{variant.epochs} epochs of metrics each, {m.diverged} diverged")  # fmt: skip
        ok = ok and m.all_recorded(variant.runs)
    print("All runs recorded: OK" if ok else "MISSING RUNS")
    for key, target in TARGETS.items():
        bound = "<=" if key in AT_MOST else ">="
        value = figures.get(key)
        if value is None:
            print(f"  target {key} {bound} {target}: skipped")
            continue
        met = value <= target if key in AT_MOST else value >= target
        print(f"  target {key} {bound} {target}: {value} {'met' if met else 'NOT MET'}")
    if args.growth:
        figures["growth"] = growth(workdir, args.verbose, args.plot)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
        print(f"figures written to {args.json}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
