"""Benchmark: how many writes per second one team server takes on this machine.

Starts ``scripts/team_server.py``'s server (``mlflow server`` with 2 workers on PostgreSQL, both
on loopback, in a temp dir), then for 1, 2 and 4 client processes writing at once, through
MLflow's client API (REST), for ``--seconds`` each:

- **metric rows**: each client logs into its own run, one ``log_batch`` of 1,000 metric values
  (MLflow's per-call limit, as lossbench splits its batches) after another;
- **runs**: each client creates runs (``create_run`` with 33 tags) and ends them
  (``set_terminated``): the per-run calls, without values;
- **lossbench runs**: each client writes runs the way lossbench's driver records a 50-epoch run
  of the standard workload through the API: ``create_run`` (33 tags), ``log_inputs`` (3 dataset
  splits), one ``log_batch`` (408 metric values: 8 per epoch and 8 final ones, 59 params,
  5 result tags) and ``set_terminated``.

With ``--sweep`` it also times what recording costs lossbench's driver: the 100-run sweep of
``scripts/bench_scale.py`` (``experiment=bench``, constant schedule: 4 losses x 5 optimizers x 5
seeds, 50 epochs) recorded through the server (the API over HTTP), then straight into its
PostgreSQL database with ``tracking.sql_batches=true``; its launcher's ``mlflow_seconds`` (time
in MLflow calls) per run.

It prints metric rows/s and runs/s for each, each call's mean time as its client waited for it,
the CPU seconds the clients, the MLflow server and PostgreSQL spent (where the load is), the CPU
other processes used meanwhile, and the load average before it starts. Clients, server and
database share this machine's cores: on 2 cores the figures are what one small box takes, the
clients' own CPU included.

    python scripts/bench_server.py                     # 1, 2, 4 clients, 10 s per phase
    python scripts/bench_server.py --json server.json  # also writes the figures
    python scripts/bench_server.py --sweep             # also the driver's cost per run
    python scripts/bench_server.py --clients 1 --seconds 3   # a quick smoke run
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

from lossbench.ui import free_port

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_scale import OtherCpu  # noqa: E402 (sibling scripts)
from team_server import DB_USER, team_server  # noqa: E402

BATCH = 1000  # MLflow's limit of metric values per log_batch call
EPOCHS = 50  # the standard workload's run
EPOCH_KEYS = ["lr", "train/loss", "train/grad_norm", "val/loss", "val/acc", "val/balanced_acc",
              "val/f1_macro", "time/epoch_seconds"]  # fmt: skip
FINAL_KEYS = ["test/loss", "test/acc", "test/balanced_acc", "test/f1_macro", "test/ece",
              "test/brier", "time/seconds", "train/final_loss"]  # fmt: skip
N_TAGS, N_PARAMS, N_RESULT_TAGS = 33, 59, 5  # as a run of the standard workload has them
PHASES = {
    "metric_rows": "metric rows, log_batch of 1,000",
    "runs": "runs, create_run + set_terminated",
    "lossbench_runs": "lossbench-shaped runs (408 values each)",
}


def _dataset_inputs() -> list[Any]:
    """Three dataset inputs (train, validation, test) like those lossbench links to a run."""
    from mlflow.entities import Dataset, DatasetInput, InputTag

    schema = json.dumps({"mlflow_colspec": [{"type": "double", "name": "x0"},
                                            {"type": "double", "name": "x1"},
                                            {"type": "long", "name": "y"}]})  # fmt: skip
    return [
        DatasetInput(
            Dataset(
                name="moons",
                digest=f"{split}0123456789",
                source_type="code",
                source='{"mlflow.source.name": "lossbench.problem.sources.moons(n_samples=2000)"}',
                schema=schema,
                profile='{"num_rows": 400}',
            ),
            tags=[InputTag("mlflow.data.context", split)],
        )  # fmt: skip
        for split in ("train", "validation", "test")
    ]


def client_main(uri: str, experiment_id: str, phase: str, seconds: float, barrier: Any,
                results: Any, index: int) -> None:  # fmt: skip
    """One client process: set up, wait for the others, write for ``seconds``, report
    (operations, metric rows, start, end, CPU seconds, {call: [count, seconds]})."""
    os.environ["MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"] = "true"  # a line per run otherwise
    from mlflow import MlflowClient
    from mlflow.entities import Metric, Param, RunTag

    client = MlflowClient(uri)
    tags = {f"lossbench.tag{i}": f"value-{i}-" + "x" * 24 for i in range(N_TAGS)}
    params = [Param(f"param.{i}", f"{i * 0.001:.6g}") for i in range(N_PARAMS)]
    result_tags = [RunTag(f"lossbench.result{i}", "FINISHED") for i in range(N_RESULT_TAGS)]
    inputs = _dataset_inputs()
    run_id = client.create_run(experiment_id, run_name=f"rows-{index}").info.run_id
    timestamp = int(time.time() * 1000)
    ops = rows = 0
    calls: dict[str, list[float]] = {}  # call -> [count, seconds]

    def call(name: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        began = time.perf_counter()
        out = fn(*args, **kwargs)
        calls.setdefault(name, [0, 0.0])
        calls[name][0] += 1
        calls[name][1] += time.perf_counter() - began
        return out

    barrier.wait()
    cpu, start = time.process_time(), time.perf_counter()
    while time.perf_counter() - start < seconds:
        if phase == "metric_rows":  # each value its own (key, step): no duplicate rows
            first = ops * BATCH
            values = [Metric(f"m{j % 8}", j * 0.5, timestamp, j // 8)
                      for j in range(first, first + BATCH)]  # fmt: skip
            call("log_batch", client.log_batch, run_id, metrics=values)
            rows += BATCH
        elif phase == "runs":
            run = call("create_run", client.create_run, experiment_id, run_name=f"c{index}-{ops}",
                       tags=tags)  # fmt: skip
            call("set_terminated", client.set_terminated, run.info.run_id)
        else:
            run = call("create_run", client.create_run, experiment_id, run_name=f"c{index}-{ops}",
                       tags=tags)  # fmt: skip
            values = [Metric(key, 0.5, timestamp, epoch)
                      for epoch in range(EPOCHS) for key in EPOCH_KEYS]  # fmt: skip
            values += [Metric(key, 0.5, timestamp, EPOCHS - 1) for key in FINAL_KEYS]
            call("log_inputs", client.log_inputs, run.info.run_id, inputs)
            call("log_batch", client.log_batch, run.info.run_id, metrics=values, params=params,
                 tags=result_tags)  # fmt: skip
            call("set_terminated", client.set_terminated, run.info.run_id)
            rows += len(values)
        ops += 1
    results.put((ops, rows, start, time.perf_counter(), time.process_time() - cpu, calls))


def cpu_seconds(processes: list[psutil.Process]) -> dict[int, float]:
    """User + system CPU seconds of each process still alive."""
    times = {}
    for p in processes:
        try:
            t = p.cpu_times()
            times[p.pid] = t.user + t.system
        except psutil.Error:
            pass
    return times


def server_processes(pgid: int, pgdata: Path) -> dict[str, list[psutil.Process]]:
    """The MLflow server's processes (its process group) and PostgreSQL's (the postmaster and
    its children: one backend per connection)."""
    mlflow = []
    for p in psutil.process_iter():
        try:
            if os.getpgid(p.pid) == pgid:
                mlflow.append(p)
        except (ProcessLookupError, psutil.Error):
            pass
    postmaster = psutil.Process(int((pgdata / "postmaster.pid").read_text().split()[0]))
    return {"mlflow_server": mlflow, "postgres": [postmaster, *postmaster.children(True)]}


def wait_idle(pgid: int, pgdata: Path, timeout: float = 120.0) -> float:
    """Wait until the server's processes are idle (under 5% of a core over 2 s): ``mlflow
    server`` starts a job runner and several job consumers after it answers, whose imports
    take tens of CPU seconds. Returns the seconds waited."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        processes = [p for ps in server_processes(pgid, pgdata).values() for p in ps]
        before = sum(cpu_seconds(processes).values())
        time.sleep(2.0)
        if sum(cpu_seconds(processes).values()) - before < 0.1:
            break
    return time.monotonic() - start


def run_phase(
    uri: str, experiment_id: str, phase: str, n_clients: int, seconds: float, pgid: int,
    pgdata: Path,
) -> dict[str, float]:  # fmt: skip
    """``n_clients`` processes write ``phase`` at once for ``seconds``; their total rate."""
    context = multiprocessing.get_context("spawn")
    barrier, results = context.Barrier(n_clients + 1), context.Queue()
    clients = [
        context.Process(target=client_main,
                        args=(uri, experiment_id, phase, seconds, barrier, results, i))
        for i in range(n_clients)
    ]  # fmt: skip
    for c in clients:
        c.start()
    barrier.wait()  # every client has imported MLflow and connected
    servers = server_processes(pgid, pgdata)
    before = {name: cpu_seconds(ps) for name, ps in servers.items()}
    with OtherCpu(lambda: [pgid, servers["postgres"][0].pid]) as others:
        reports = [results.get(timeout=seconds + 600) for _ in clients]
    servers_after = server_processes(pgid, pgdata)  # backends opened meanwhile count from 0
    after = {name: cpu_seconds(ps) for name, ps in servers_after.items()}
    for c in clients:
        c.join()
    ops, rows = sum(r[0] for r in reports), sum(r[1] for r in reports)
    wall = max(r[3] for r in reports) - min(r[2] for r in reports)
    figures = {
        "clients": n_clients,
        "seconds": round(wall, 2),
        "ops": ops,
        "rows": rows,
        "ops_per_second": round(ops / wall, 1),
        "rows_per_second": round(rows / wall, 1),
        "client_cpu_seconds": round(sum(r[4] for r in reports), 2),
        "other_processes_cores": round(others.cores, 3),
        "ms_per_call": {  # each call's mean wall time, as its client waited for it
            name: round(
                1000
                * sum(r[5][name][1] for r in reports if name in r[5])
                / sum(r[5][name][0] for r in reports if name in r[5]),
                1,
            )
            for name in sorted({name for r in reports for name in r[5]})
        },
    }
    for name in servers:
        used = sum(t - before[name].get(pid, 0.0) for pid, t in after[name].items())
        figures[f"{name}_cpu_seconds"] = round(used, 2)
    return figures


def record_sweep(
    uri: str, sql_batches: bool, workdir: Path, experiment: str, server_pids: list[int]
) -> dict[str, Any]:
    """Run the 100-run sweep of ``scripts/bench_scale.py`` recording into ``uri``; the time its
    launcher spent in MLflow calls, in all and per run (``server_pids``: the server's and the
    database's main processes, not counted as other load)."""
    sweep_dir = workdir / f"sweep-{experiment}"
    cmd = [
        sys.executable, "-m", "lossbench.train", "experiment=bench",
        "hydra.sweeper.params.scheduler=constant", f"tracking.uri={uri}",
        f"tracking.experiment={experiment}", f"tracking.sql_batches={str(sql_batches).lower()}",
        f"hydra.sweep.dir={sweep_dir}",
    ]  # fmt: skip
    start = time.perf_counter()
    with OtherCpu(lambda: server_pids) as others:
        done = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        print((done.stdout + done.stderr)[-4000:])
        raise SystemExit(f"the sweep into {uri} failed (exit {done.returncode})")
    summary = json.loads((sweep_dir / "lossbench-summary.json").read_text())
    runs = summary["statuses"].get("finished", 0)
    if runs != summary["runs"]:
        raise SystemExit(f"the sweep into {uri}: {summary['statuses']} of {summary['runs']} runs")
    return {
        "uri": uri,
        "sql_batches": sql_batches,
        "runs": runs,
        "seconds": round(seconds, 2),
        "mlflow_seconds": summary["mlflow_seconds"],
        "mlflow_seconds_per_run": round(summary["mlflow_seconds"] / runs, 4),
        "other_processes_cores": round(others.cores, 3),
        "launcher": summary,
    }


def main() -> int:
    """Start a team server, measure every phase with each client count, print the rates."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 2, 4],
                        help="client processes writing at once (default: 1 2 4)")  # fmt: skip
    parser.add_argument("--seconds", type=float, default=10.0, help="per phase (default 10)")
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    parser.add_argument("--sweep", action="store_true", help="also time the driver's recording")
    parser.add_argument("--workdir", type=Path, help="server data and logs (default: temp dir)")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop the server on the way out

    workdir = (args.workdir or Path(tempfile.mkdtemp(prefix="lossbench-server-"))).resolve()
    load = os.getloadavg()[0]
    print(f"Team server (MLflow server, 2 workers, on PostgreSQL) under {workdir}; clients write "
          f"for {args.seconds:.0f} s per phase; {os.cpu_count()} cores, load average {load:.2f}",
          flush=True)  # fmt: skip
    results: list[dict[str, Any]] = []
    sweeps: list[dict[str, Any]] = []
    pg_port = free_port()
    with team_server(workdir, port=free_port(), pg_port=pg_port) as server:
        from mlflow import MlflowClient

        experiment_id = MlflowClient(server.uri).create_experiment("bench-server")
        waited = wait_idle(server.pgid, workdir / "pgdata")
        print(f"Server ready and idle after {waited:.0f} s more (its job consumers start)")
        for phase, what in PHASES.items():
            for n in args.clients:
                r = run_phase(server.uri, experiment_id, phase, n, args.seconds, server.pgid,
                              workdir / "pgdata")  # fmt: skip
                results.append({"phase": phase, **r})
                rate = (f"{r['rows_per_second']:,.0f} metric rows/s" if phase == "metric_rows"
                        else f"{r['ops_per_second']:,.1f} runs/s")  # fmt: skip
                if phase == "lossbench_runs":
                    rate += f" = {r['rows_per_second']:,.0f} metric rows/s"
                print(f"{what}, {n} client(s): {rate} ({r['ops']} in {r['seconds']:.1f} s; CPU s: "
                      f"clients {r['client_cpu_seconds']:.1f}, MLflow server "
                      f"{r['mlflow_server_cpu_seconds']:.1f}, PostgreSQL "
                      f"{r['postgres_cpu_seconds']:.1f}; other processes "
                      f"{r['other_processes_cores']:.2f} cores)", flush=True)  # fmt: skip
                print("    ms per call: " + ", ".join(f"{name} {ms:.0f}"
                                                    for name, ms in r["ms_per_call"].items()))  # fmt: skip
        if args.sweep:
            database = f"postgresql+psycopg2://{DB_USER}@127.0.0.1:{pg_port}/mlflow"
            for uri, sql_batches, name, what in (
                (server.uri, False, "bench-http", "through the server (MLflow's API over HTTP)"),
                (database, True, "bench-pg", "into PostgreSQL, tracking.sql_batches=true"),
            ):
                print(f"The 100-run sweep recorded {what} ...", flush=True)
                postmaster = server_processes(server.pgid, workdir / "pgdata")["postgres"][0]
                r = record_sweep(uri, sql_batches, workdir, name, [server.pgid, postmaster.pid])
                sweeps.append({"name": name, **r})
                print(f"  {r['seconds']:.1f} s (MLflow calls {r['mlflow_seconds']:.1f} s = "
                      f"{r['mlflow_seconds_per_run'] * 1000:.0f} ms per run; other processes "
                      f"{r['other_processes_cores']:.2f} cores)", flush=True)  # fmt: skip
    figures: dict[str, Any] = {"cores": os.cpu_count(), "load_average_before": round(load, 2),
                               "seconds_per_phase": args.seconds, "phases": results,
                               "sweeps": sweeps}  # fmt: skip
    for phase in PHASES:
        best = max((r for r in results if r["phase"] == phase), key=lambda r: r["ops_per_second"])
        key = "rows" if phase == "metric_rows" else "ops"
        figures[f"best_{phase}_per_second"] = best[f"{key}_per_second"]
        figures[f"best_{phase}_clients"] = best["clients"]
    print(f"Best: {figures['best_metric_rows_per_second']:,.0f} metric rows/s "
          f"({figures['best_metric_rows_clients']} clients), {figures['best_runs_per_second']:,.1f} "
          f"runs/s ({figures['best_runs_clients']} clients), "
          f"{figures['best_lossbench_runs_per_second']:,.1f} lossbench runs/s "
          f"({figures['best_lossbench_runs_clients']} clients)")  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
        print(f"figures written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
