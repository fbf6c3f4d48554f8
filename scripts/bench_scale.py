"""Benchmark: the same 100-run sweep three ways on this machine, in one invocation.

  (a) ``hydra.launcher.executor=local``: lossbench's launcher, stacks in local worker processes
      (the default);
  (b) ``hydra.launcher.executor=ray``: lossbench's launcher, each stack a Ray task, on a local
      Ray cluster with 2 CPUs that this script starts (in its own temp dir) and stops;
  (c) ``hydra/launcher=ray_cluster``: Hydra's Ray launcher on that same cluster, one Ray task
      per job, each run trained alone.

The sweep, chosen before any of the three was timed: the README's standard workload
(``experiment=bench``: moons, 2,000 rows, MLP 2x64 ReLU, batch 64, 50 epochs, per-epoch metrics
in MLflow) with its constant schedule only: 4 losses x 5 optimizers x 5 seeds = 100 runs. It is
what lossbench is for (recipes compared over seeds, on a small dataset, over a modest schedule),
it is the workload of ``scripts/bench_sweep.py``'s figures, and 100 runs is enough for fixed
costs (start-up, connecting to Ray, the workers' imports) not to decide the outcome.

Each way is one ``lossbench-train`` subprocess into a fresh SQLite store, timed by wall clock
from start to exit; then every store is checked: 100 runs FINISHED, each with every epoch of its
per-epoch metrics. (a) runs before the cluster starts, so Ray's idle daemons do not share its
cores; the cluster's start and stop are timed apart and are not part of (b) or (c). Targets
(issue 14): (b) within 1.5x of (a); (b) at least 2.5x faster than (c).

    python scripts/bench_scale.py                       # all three, prints times and ratios
    python scripts/bench_scale.py --json scale.json     # also writes the figures
    python scripts/bench_scale.py --ways local hydra_ray --epochs 3   # a quick smoke run

Run it with nothing else busy on the machine: it prints the load average before it starts and,
for each way, how much CPU other processes used meanwhile.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from lossbench.ui import free_port, stop_group

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_sweep import count_complete  # noqa: E402 (the benchmark's check, shared)

RAY_CPUS = 2
# the sweep: experiment=bench (4 losses x 5 optimizers x 3 schedulers x 5 seeds), constant only
SWEEP = ["experiment=bench", "hydra.sweeper.params.scheduler=constant"]
RUNS = 4 * 5 * 5
WAYS = {
    "local": "(a) lossbench launcher, executor=local",
    "ray": f"(b) lossbench launcher, executor=ray ({RAY_CPUS}-CPU local cluster)",
    "hydra_ray": "(c) hydra/launcher=ray_cluster (one task per run, same cluster)",
}
TARGETS = {
    "ray_over_local": 1.5,  # (b) / (a) <= 1.5
    "hydra_ray_over_ray": 2.5,  # (c) / (b) >= 2.5
}


@dataclass
class WayMeasure:
    """One way's sweep: its wall time and what its store holds afterwards."""

    seconds: float
    finished: int
    complete: int  # finished runs with every epoch of every per-epoch metric
    diverged: int
    other_cores: float  # CPU that processes outside the benchmark used meanwhile, in cores
    driver_cpu: float  # CPU seconds of the lossbench-train process itself (not its workers)
    summary: dict[str, Any] = field(default_factory=dict)  # lossbench's launcher only


class OtherCpu:
    """CPU seconds that processes outside the benchmark use while it runs: what other work on
    the machine takes from it. Every process is sampled each ``interval`` seconds; the
    benchmark's are this process's descendants and those of ``roots()`` (servers that detach);
    a process that exits between samples loses its last interval."""

    def __init__(self, roots: Callable[[], list[int]] = list, interval: float = 1.0) -> None:
        self.roots, self.interval = roots, interval
        self.ours: set[int] = set()
        self.last: dict[tuple[int, float], float] = {}
        self.seconds = self.cpu = 0.0
        self._stop = threading.Event()

    def __enter__(self) -> OtherCpu:
        self._start = time.monotonic()
        self._sample(first=True)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()
        self.seconds = time.monotonic() - self._start

    @property
    def cores(self) -> float:
        """Other processes' CPU, in cores on average over the measured time."""
        return self.cpu / self.seconds if self.seconds else 0.0

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def _sample(self, first: bool = False) -> None:
        for root in [os.getpid(), *self.roots()]:
            with contextlib.suppress(psutil.Error):
                self.ours.add(root)
                self.ours.update(c.pid for c in psutil.Process(root).children(recursive=True))
        for p in psutil.process_iter(["create_time", "cpu_times"]):
            times = p.info["cpu_times"]
            if times is None or p.info["create_time"] is None:
                continue
            key, total = (p.pid, p.info["create_time"]), times.user + times.system
            # a process seen for the first time after the start counts from its birth
            previous = self.last.get(key, total if first else 0.0)
            self.last[key] = total
            if p.pid not in self.ours:
                self.cpu += max(total - previous, 0.0)


@contextlib.contextmanager
def ray_cluster(directory: Path, num_cpus: int = RAY_CPUS) -> Iterator[str]:
    """A one-node Ray cluster on loopback with ``num_cpus`` CPUs, started (``ray start --head``)
    in ``directory`` with its own temp dir; yields its address; stops it, every process of it."""
    port = free_port()
    cmd = [
        str(Path(sys.executable).with_name("ray")), "start", "--head", "--block",
        "--node-ip-address", "127.0.0.1", "--port", str(port), "--num-cpus", str(num_cpus),
        "--ray-client-server-port", str(free_port()), "--dashboard-port", str(free_port()),
        "--include-dashboard=false", "--disable-usage-stats",
        "--temp-dir", str(directory / "ray-tmp"),
    ]  # fmt: skip
    log = directory / "ray.log"
    with open(log, "w") as out:
        head = subprocess.Popen(
            cmd, cwd=directory, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        deadline = time.monotonic() + 120
        while "will now block forever" not in log.read_text():
            if head.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"ray start failed:\n{log.read_text()[-3000:]}")
            time.sleep(0.2)
        yield f"127.0.0.1:{port}"
    finally:
        stop_group(head, timeout=3)  # on SIGTERM Ray drains for 30 s; nothing is left to drain


def run_way(way: str, workdir: Path, epochs: int, address: str | None, verbose: bool) -> WayMeasure:
    """Run the sweep one way into a fresh SQLite store under ``workdir``; time it; check it."""
    store = workdir / f"store-{way}"
    store.mkdir(parents=True)
    uri = f"sqlite:///{store / 'mlflow.db'}"
    overrides = [*SWEEP, f"trainer.max_epochs={epochs}", f"hydra.sweep.dir={store / 'multirun'}"]
    if way == "local":
        overrides.append("hydra.launcher.executor=local")
    elif way == "ray":
        overrides += [
            "hydra.launcher.executor=ray",
            f"hydra.launcher.ray.address={address}",
            "hydra.launcher.ray.num_cpus=1",
        ]
    else:
        overrides.append("hydra/launcher=ray_cluster")  # joins $RAY_ADDRESS
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri}
    if address:
        env["RAY_ADDRESS"] = address
    cmd = [sys.executable, "-m", "lossbench.train", *overrides]
    log = store / "output.log"
    start = time.perf_counter()
    driver_cpu = 0.0
    with OtherCpu() as others, open(log, "w") as out:
        proc = subprocess.Popen(cmd, cwd=store, env=env, stdout=out, stderr=subprocess.STDOUT)
        driver = psutil.Process(proc.pid)
        while proc.poll() is None:  # the sweep's own process: its CPU until just before it exits
            with contextlib.suppress(psutil.Error):
                times = driver.cpu_times()
                driver_cpu = times.user + times.system
            time.sleep(0.2)
    seconds = time.perf_counter() - start
    output = log.read_text()
    if verbose:
        print("".join(f"   | {line}\n" for line in output.splitlines()), end="")
    if proc.returncode != 0:
        print(output[-4000:])
        raise SystemExit(f"{WAYS[way]}: the sweep failed (exit {proc.returncode}); log: {log}")
    summary_file = store / "multirun" / "lossbench-summary.json"
    summary = json.loads(summary_file.read_text()) if summary_file.exists() else {}
    finished, complete, diverged = count_complete(uri, epochs, "bench")
    return WayMeasure(seconds, finished, complete, diverged, others.cores, driver_cpu, summary)


def describe(way: str, m: WayMeasure) -> str:
    """One line: the way, its time and, for lossbench's launcher, its stacks."""
    line = f"{WAYS[way]}: {m.seconds:.1f} s ({RUNS / m.seconds * 60:.0f} runs/min"
    line += f"; the sweep's process used {m.driver_cpu:.1f} CPU s"
    line += f"; other processes {m.other_cores:.2f} cores meanwhile)"
    if m.summary:
        s = m.summary
        line += (
            f"; {s['stacks']} stacked fits on {s['workers']} workers, training and recording "
            f"{s['train_seconds']:.1f} s, MLflow writes {s['mlflow_seconds']:.1f} s"
        )
    return line


def main() -> int:
    """Run the benchmark and print (and optionally write) its figures."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--ways", nargs="+", choices=list(WAYS), default=list(WAYS),
        help="which ways to run (default: all three; ratios need both of their ways)",
    )  # fmt: skip
    parser.add_argument("--epochs", type=int, default=50, help="epochs per run (default 50)")
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    parser.add_argument("--workdir", type=Path, help="where stores go (default: a temp dir)")
    parser.add_argument("--verbose", action="store_true", help="show each sweep's own output")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop the cluster on the way out

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="lossbench-scale-"))
    workdir.mkdir(parents=True, exist_ok=True)
    load_before = os.getloadavg()
    print(f"Sweep: {' '.join(SWEEP)}: {RUNS} runs (4 losses x 5 optimizers x 5 seeds), moons "
          f"2,000 rows, MLP 2x64, batch 64, {args.epochs} epochs; {os.cpu_count()} cores; "
          f"load average {load_before[0]:.2f}. Stores under {workdir}")  # fmt: skip

    measures: dict[str, WayMeasure] = {}

    def measure(way: str, address: str | None = None) -> None:
        print(f"{WAYS[way]} ...", flush=True)
        measures[way] = run_way(way, workdir, args.epochs, address, args.verbose)
        print(f"  {describe(way, measures[way])}", flush=True)

    if "local" in args.ways:
        measure("local")
    cluster: dict[str, float] = {}
    if {"ray", "hydra_ray"} & set(args.ways):
        cluster_dir = workdir / "cluster"
        cluster_dir.mkdir()
        start = time.perf_counter()
        with ray_cluster(cluster_dir) as address:
            cluster["start_seconds"] = time.perf_counter() - start
            print(f"Ray cluster up at {address} ({RAY_CPUS} CPUs) in "
                  f"{cluster['start_seconds']:.1f} s (not counted in (b) or (c))", flush=True)  # fmt: skip
            for way in ("ray", "hydra_ray"):
                if way in args.ways:
                    measure(way, address)
            stopping = time.perf_counter()
        cluster["stop_seconds"] = time.perf_counter() - stopping
        print(f"Ray cluster stopped in {cluster['stop_seconds']:.1f} s (not counted)")

    figures: dict[str, Any] = {
        "runs": RUNS,
        "epochs": args.epochs,
        "sweep": SWEEP,
        "cores": os.cpu_count(),
        "ray_cluster_cpus": RAY_CPUS,
        "load_average_before": round(load_before[0], 2),  # 1 min, before the first sweep
        **{f"ray_cluster_{k}": round(v, 2) for k, v in cluster.items()},
    }
    for way, m in measures.items():
        figures.update({
            f"{way}_seconds": round(m.seconds, 2),
            f"{way}_runs_finished": m.finished,
            f"{way}_runs_complete": m.complete,
            f"{way}_runs_diverged": m.diverged,
            f"{way}_other_processes_cores": round(m.other_cores, 3),
            f"{way}_driver_cpu_seconds": round(m.driver_cpu, 2),
        })  # fmt: skip
        if m.summary:
            figures[f"{way}_launcher"] = m.summary
    if "local" in measures and "ray" in measures:
        figures["ray_over_local"] = round(measures["ray"].seconds / measures["local"].seconds, 3)
    if "ray" in measures and "hydra_ray" in measures:
        figures["hydra_ray_over_ray"] = round(
            measures["hydra_ray"].seconds / measures["ray"].seconds, 3
        )

    print()
    for way, m in measures.items():
        print(describe(way, m))
    print("(wall time of each lossbench-train process, start to exit; the cluster's start and "
          "stop are not counted)")  # fmt: skip
    ok = True
    for way, m in measures.items():
        print(f"Check ({way}): {m.finished}/{RUNS} runs FINISHED, {m.complete} with "
              f"{args.epochs} epochs of metrics each, {m.diverged} diverged")  # fmt: skip
        ok = ok and m.finished == m.complete == RUNS
    print("All runs recorded: OK" if ok else "MISSING RUNS")
    for key, target in TARGETS.items():
        value = figures.get(key)
        if key == "ray_over_local":
            what = f"(b)/(a) <= {target}"
            met = value is not None and value <= target
        else:
            what = f"(c)/(b) >= {target}"
            met = value is not None and value >= target
        if value is None:
            print(f"  target {key}: {what}: skipped")
        else:
            print(f"  target {key}: {what}: {value:.2f} {'met' if met else 'NOT MET'}")
        figures[f"{key}_met"] = met if value is not None else None
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
        print(f"figures written to {args.json}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
