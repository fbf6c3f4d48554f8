"""The benchmark's workloads, and measuring a sweep of one through ``lossbench-train``.

Part of ``scripts/bench_sweep.py``: what it runs through the product (a sweep, the report on a
sweep, a sweep's fixed cost, failing on an unreachable store) and how each is measured (wall
time of the process from start to exit, resident memory of its process tree, what its store
holds afterwards). The references it is compared with are in ``bench_references.py``.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import re
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
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
# the own-optimizer variant: Adafactor (stepped member by member) at five learning rates in
# place of the five optimizers, around its config's lr (0.01)
OWN_OPTIMIZER = "adafactor"
OWN_OPTIMIZER_LRS = ["0.001", "0.003", "0.01", "0.03", "0.1"]
BENCH_LR = Path(__file__).resolve().parents[1] / "conf" / "experiment" / "bench_lr.yaml"
# the lr workload's swept optimizer.lr values, as the preset writes them
LR_VALUES = yaml.safe_load(BENCH_LR.read_text())["hydra"]["sweeper"]["params"]["optimizer.lr"]
# what lossbench-train says once per store: which write path records the runs
WRITE_PATH = re.compile(r"lossbench: writing runs to \S+ with (batched SQL|MLflow's API)")
WRITE_PATHS = {"batched SQL": "sql", "MLflow's API": "api"}


@dataclass
class Workload:
    """One variant of the standard workload (``experiment=bench``) or of the lr workload
    (``lr=True``: ``experiment=bench_lr``), stacked by ``stack_by``; ``own_optimizer``: the
    standard workload with Adafactor at five rates in place of the five optimizers (each
    member steps through its own optimizer instance); ``audit``: ``hydra.launcher.audit``
    (None: the default); ``sql_batches``: ``tracking.sql_batches`` (``auto``, the default,
    writes through batched SQL where verified; ``false`` through MLflow's API)."""

    runs: int = 300
    rows: int = 2000
    epochs: int = 50
    lr: bool = False
    stack_by: str = "recipe"
    own_optimizer: bool = False
    audit: str | None = None
    sql_batches: str = "auto"

    @property
    def experiment(self) -> str:
        """The preset, which is also its MLflow experiment."""
        return "bench_lr" if self.lr else "bench"

    @property
    def name(self) -> str:
        """A short name for its store's folder."""
        parts = [self.experiment, self.stack_by, f"{self.runs}-{self.rows}-{self.epochs}"]
        parts += ["own_optimizer"] * self.own_optimizer + [f"audit_{self.audit}"] * bool(self.audit)
        return "-".join([*parts, f"sql_{self.sql_batches}"])

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

    def jobs(self) -> list[tuple[str, str, str, int]]:
        """The standard workload's runs as (loss, optimizer, scheduler, seed), in the order
        the sweep composes them (the preset's axes: loss, optimizer, scheduler, seed)."""
        losses, optimizers, schedulers = self.grid()
        return list(itertools.product(losses, optimizers, schedulers, range(SEEDS)))

    def overrides(self) -> list[str]:
        """Command-line overrides of the preset for this variant."""
        common = [
            f"experiment={self.experiment}",
            f"dataset.source.n_samples={self.rows}",
            f"trainer.max_epochs={self.epochs}",
            f"hydra.launcher.stack_by={self.stack_by}",
            f"tracking.sql_batches={self.sql_batches}",
            *([f"hydra.launcher.audit={self.audit}"] if self.audit else []),
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
        if self.own_optimizer:
            rates = OWN_OPTIMIZER_LRS[: len(optimizers)]
            swept = [f"hydra.sweeper.params.optimizer={OWN_OPTIMIZER}",
                     f"optimizer.lr={','.join(rates)}"]  # fmt: skip
        else:
            swept = [f"hydra.sweeper.params.optimizer='{','.join(optimizers)}'"]
        return [
            *common,
            f"hydra.sweeper.params.loss='{','.join(losses)}'",
            *swept,
            f"hydra.sweeper.params.scheduler='{','.join(schedulers)}'",
        ]


@dataclass
class SweepMeasure:
    """What one sweep through the product cost."""

    seconds: float
    peak_rss_mb: float  # resident memory of its processes, summed (shared pages counted in each)
    peak_pss_mb: float  # their proportional set size, summed (shared pages split among sharers)
    peak_processes: list[tuple[str, float]] = field(default_factory=list)  # at the RSS peak
    rss_by_runs: list[tuple[int, float, float]] = field(default_factory=list)  # main, max worker
    summary: dict[str, Any] = field(default_factory=dict)
    write_path: str = "?"  # "sql" or "api", as lossbench-train announced it
    uri: str = ""
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


def tree_rss(proc: psutil.Process) -> list[tuple[str, float]]:
    """Each process of the tree (its command line's end) and its resident memory, in MB."""
    found = []
    for p in [proc, *proc.children(recursive=True)]:
        with contextlib.suppress(psutil.Error):
            found.append((" ".join(p.cmdline())[-50:], p.memory_info().rss / 2**20))
    return found


def tree_pss_mb(proc: psutil.Process) -> float:
    """Proportional set size of a process and all its children, in MB: a page shared by n
    processes (workers forked from one server) counts 1/n in each."""
    total = 0.0
    for p in [proc, *proc.children(recursive=True)]:
        with contextlib.suppress(psutil.Error, AttributeError):
            total += p.memory_full_info().pss / 2**20
    return total


class OtherLoad:
    """While a part of the benchmark runs: how many cores other processes used (every process
    on the machine but this one and its descendants), from their CPU times sampled each second
    (a process that starts and ends between two samples is missed)."""

    def __init__(self) -> None:
        self.cores = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> OtherLoad:
        self._start = time.perf_counter()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _sample(self) -> None:
        me = os.getpid()
        seen: dict[int, float] = {}
        used = 0.0
        first = True
        while True:
            try:
                mine = {me, *(p.pid for p in psutil.Process(me).children(recursive=True))}
            except psutil.Error:
                mine = {me}
            for proc in psutil.process_iter(["pid", "cpu_times"]):
                times = proc.info["cpu_times"]
                if proc.info["pid"] in mine or times is None:
                    continue
                total = times.user + times.system
                before = seen.get(proc.info["pid"])
                if before is not None:
                    used += max(0.0, total - before)
                elif not first:  # started since the last sample
                    used += total
                seen[proc.info["pid"]] = total
            first = False
            self.cores = used / max(time.perf_counter() - self._start, 1e-9)
            if self._stop.wait(1.0):
                return


def run_sweep(work: Workload, workdir: Path, verbose: bool) -> SweepMeasure:
    """Run the workload through ``lossbench-train`` into a fresh store and measure it."""
    store = workdir / f"store-{work.name}"
    sweep_dir = store / "multirun"
    uri = f"sqlite:///{store / 'mlflow.db'}"
    cmd = [
        sys.executable,
        "-m",
        "lossbench.train",
        *work.overrides(),
        f"hydra.sweep.dir={sweep_dir}",
    ]
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri}
    start = time.perf_counter()
    proc = subprocess.Popen(
        cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    ps = psutil.Process(proc.pid)
    peak, peak_pss, rss_by_runs, lines = 0.0, 0.0, [], []
    stop = threading.Event()

    peak_processes: list[tuple[str, float]] = []

    def sample() -> None:
        nonlocal peak, peak_pss, peak_processes
        ticks = 0
        while not stop.is_set():
            processes = tree_rss(ps)
            if sum(rss for _, rss in processes) > peak:
                peak, peak_processes = sum(rss for _, rss in processes), processes
            if ticks % 20 == 0:  # reading every page table costs 13 ms: every 2 s
                peak_pss = max(peak_pss, tree_pss_mb(ps))
            ticks += 1
            time.sleep(0.1)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    assert proc.stdout is not None
    write_path = "?"
    for line in proc.stdout:
        lines.append(line)
        if verbose:
            print("   |", line.rstrip())
        said = WRITE_PATH.search(line)
        if said:
            write_path = WRITE_PATHS[said.group(1)]
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
    measure = SweepMeasure(
        seconds, peak, peak_pss, peak_processes, rss_by_runs, summary, write_path, uri
    )
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


def time_report(uri: str, out: Path) -> float:
    """Seconds of ``lossbench-report`` on the latest sweep of a store, its process from start
    to exit (it prints the tables, writes the files and attaches them to the sweep's run)."""
    command = Path(sys.executable).with_name("lossbench-report")  # the installed command
    cmd = [str(command), "--tracking-uri", uri, "--out", str(out)]
    start = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        sys.stdout.write((done.stdout + done.stderr)[-3000:])
        raise SystemExit(f"lossbench-report failed (exit {done.returncode})")
    return seconds


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
