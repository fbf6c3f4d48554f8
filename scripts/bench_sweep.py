"""Benchmark: the standard 300-run sweep and its variants through ``lossbench-train``, against
three references measured in the same invocation on the same configs.

Standard workload: moons (2,000 rows, noise 0.2), MLP 2x64 ReLU, batch 64, 50 epochs, per-epoch
metrics in MLflow; 4 losses x 5 optimizers x 3 schedulers x 5 seeds = 300 runs
(``conf/experiment/bench.yaml``). The lr workload: the same data and model, 5 optimizers x 6
learning rates each (around its usual lr) x 2 schedules x 5 seeds = 300 runs
(``conf/experiment/bench_lr.yaml``).

Sweeps, each into a fresh SQLite store, each saying which write path recorded it:
  - standard: the standard workload as a user runs it (batched SQL, the default on SQLite);
  - api: the same through MLflow's API (``tracking.sql_batches=false``);
  - lr: the lr workload;
  - seed_loss, lr_seed_loss: both workloads with ``hydra.launcher.stack_by=seed_loss`` (members
    differ only in seed and loss, as before recipe stacks);
  - own_optimizer: the standard workload with ``optimizer=adafactor`` at five learning rates in
    place of the five optimizers: each member steps through its own optimizer instance;
  - audit_all: the standard workload with ``hydra.launcher.audit=all`` (each stack trained again
    in float64, and one member's plain model).
It times ``lossbench-report`` on the standard sweep just trained, and how long
``lossbench-train`` takes to fail on an unreachable store (``tracking.uri=http://127.0.0.1:9``).

References (``bench_references.py``): (a) naive Lightning + MLFlowLogger and (b) a plain PyTorch
loop, one run at a time on a sample of the configs; (c) the bare stacked loop on all the runs,
in the sweep's stacks, one process per core: ``overhead_vs_bare`` = sweep / (c).

    python scripts/bench_sweep.py                      # everything, with the targets
    python scripts/bench_sweep.py --json bench.json    # also write the figures
    python scripts/bench_sweep.py --runs 60 --epochs 20
    python scripts/bench_sweep.py --runs 20 --epochs 2 --skip references unreachable   # a smoke run
    python scripts/bench_sweep.py --growth             # time vs runs, rows and epochs -> PNG
    python scripts/bench_sweep.py --overheads-only     # a sweep's fixed cost, compose+check
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

from bench_references import measure_bare, measure_references
from bench_workloads import (
    SEEDS,
    OtherLoad,
    SweepMeasure,
    Workload,
    growth,
    measure_overheads,
    run_sweep,
    time_report,
    time_unreachable_store,
)

TARGETS = {
    "sweep_seconds": 20.0,  # the standard sweep, default write path
    "overhead_vs_bare": 1.6,  # sweep_seconds / bare_stacked_seconds
    "speedup_vs_naive": 100.0,
    "speedup_vs_plain": 6.0,
    "lr_speedup_vs_seed_stacks": 3.0,  # the lr workload: stack_by=seed_loss time / recipe time
    "mlflow_share": 0.15,  # the standard sweep's MLflow calls / its wall time
    "peak_rss_mb_all_workloads": 2048.0,  # the largest of every sweep's (all its processes)
    "report_seconds": 3.0,
    "unreachable_store_seconds": 60.0,
    "fixed_cost_seconds": 5.0,
    "compose_check_seconds_300": 2.0,
    "compose_check_seconds_1500": 5.0,
}
AT_MOST = (
    "sweep_seconds",
    "overhead_vs_bare",
    "mlflow_share",
    "peak_rss_mb_all_workloads",
    "report_seconds",
    "unreachable_store_seconds",
    "fixed_cost_seconds",
    "compose_check_seconds_300",
    "compose_check_seconds_1500",
)  # other targets: >=
PARTS = (
    "api",
    "lr",
    "seed_loss",
    "own_optimizer",
    "audit_all",
    "references",
    "bare",
    "report",
    "unreachable",
    "overheads",
)  # what --skip can skip
PATH_NAMES = {"sql": "batched SQL", "api": "MLflow's API", "?": "an unknown path"}


def load() -> float:
    """The machine's load average over the last minute."""
    return round(os.getloadavg()[0], 2)


def sweep_figures(prefix: str, m: SweepMeasure) -> dict[str, Any]:
    """The figures of one sweep, keys prefixed."""
    return {
        f"{prefix}sweep_seconds": round(m.seconds, 2),
        f"{prefix}write_path": m.write_path,
        f"{prefix}stacks": m.summary["stacks"],
        f"{prefix}runs_finished": m.finished,
        f"{prefix}runs_diverged": m.diverged,
        f"{prefix}mlflow_seconds": m.summary["mlflow_seconds"],
        f"{prefix}mlflow_share": round(m.summary["mlflow_seconds"] / m.seconds, 4),
        f"{prefix}peak_rss_mb": round(m.peak_rss_mb, 1),
        f"{prefix}peak_pss_mb": round(m.peak_pss_mb, 1),
        f"{prefix}peak_rss_processes": [[name, round(rss, 1)] for name, rss in m.peak_processes],
        f"{prefix}launcher": m.summary,
    }


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
    loads: dict[str, float] = {"start": load()}
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
          f"MLP 2x64, batch 64, {work.epochs} epochs. Stores under {workdir}. "
          f"Load average {loads['start']} on {os.cpu_count()} cores.")  # fmt: skip
    if "lr" not in skip:
        print(f"lr workload: {lr_work.runs} runs (optimizers x lrs x schedulers x {SEEDS} seeds = "
              f"{' x '.join(str(len(g)) for g in grids[1])} x {SEEDS}), the same data and model")  # fmt: skip

    sweeps: dict[str, tuple[Workload, SweepMeasure]] = {}
    others: dict[str, float] = {}  # cores used by other processes while each part ran

    def measure(name: str, what: str, variant: Workload) -> None:
        loads[name] = load()
        print(f"{what} ...", flush=True)
        with OtherLoad() as other:
            sweeps[name] = (variant, run_sweep(variant, workdir, args.verbose))
        others[name] = round(other.cores, 2)
        m = sweeps[name][1]
        print(f"   {m.seconds:.1f} s, written with {PATH_NAMES[m.write_path]}, "
              f"{m.summary['stacks']} stacked fits, peak RSS {m.peak_rss_mb:.0f} MB "
              f"(other processes meanwhile: {others[name]} cores)", flush=True)  # fmt: skip

    measure("standard", "The standard sweep (the default write path)", work)
    sweep = sweeps["standard"][1]
    report_seconds = None
    if "report" not in skip:
        loads["report"] = load()
        print("lossbench-report on it ...", flush=True)
        with OtherLoad() as other:
            report_seconds = time_report(sweep.uri, workdir / "report")
        others["report"] = round(other.cores, 2)
    bare: dict[str, Any] = {}
    if "bare" not in skip:
        loads["bare"] = load()
        print(f"Reference (c), the bare stacked loop: {sweep.summary['stacks']} stacks on "
              f"{sweep.summary['workers']} processes ...", flush=True)  # fmt: skip
        with OtherLoad() as other:
            bare = measure_bare(work, sweep.summary["stacks"], sweep.summary["workers"])
        others["bare"] = round(other.cores, 2)
    variants = (
        ("api", "api", "The same through MLflow's API (tracking.sql_batches=false)",
         replace(work, sql_batches="false")),
        ("lr", "lr", "The lr workload (experiment=bench_lr)", lr_work),
        ("seed_loss", "seed_loss", "The standard sweep with hydra.launcher.stack_by=seed_loss",
         replace(work, stack_by="seed_loss")),
        ("lr_seed_loss", "seed_loss", "The lr workload with hydra.launcher.stack_by=seed_loss",
         replace(lr_work, stack_by="seed_loss")),
        ("own_optimizer", "own_optimizer", "The standard sweep with optimizer=adafactor (five "
         "rates in place of the five optimizers: each member its own optimizer instance)",
         replace(work, own_optimizer=True)),
        ("audit_all", "audit_all", "The standard sweep with hydra.launcher.audit=all",
         replace(work, audit="all")),
    )  # fmt: skip
    for name, part, what, variant in variants:
        if part in skip or (name.startswith("lr") and "lr" in skip):
            continue
        measure(name, what, variant)
    ref: dict[str, float] = {}
    if "references" not in skip:
        loads["references"] = load()
        print(f"References (a), (b): naive x{args.naive_sample}, plain x{args.plain_sample} ...",
              flush=True)  # fmt: skip
        with OtherLoad() as other:
            ref = measure_references(work, workdir, args.naive_sample, args.plain_sample)
        others["references"] = round(other.cores, 2)
    unreachable = None
    if "unreachable" not in skip:
        print("An unreachable store ...", flush=True)
        unreachable = time_unreachable_store(workdir)
    overheads: dict[str, Any] = {}
    if "overheads" not in skip:
        loads["overheads"] = load()
        print("Fixed cost, composing and checking ...", flush=True)
        overheads = measure_overheads(workdir, args.verbose)
    loads["end"] = load()

    figures: dict[str, Any] = {
        **sweep_figures("", sweep),
        "runs": work.runs,
        "runs_complete": sweep.complete,
        "runs_per_minute": round(work.runs / sweep.seconds * 60, 1),
        "rss_mb_by_runs_done": [
            {"runs": n, "main": round(main, 1), "largest_worker": round(worker, 1)}
            for n, main, worker in sweep.rss_by_runs
        ],
        "peak_rss_mb_all_workloads": round(max(m.peak_rss_mb for _, m in sweeps.values()), 1),
        "load_average": loads,
        "other_processes_cores": others,
        **overheads,
    }
    for name, (_, m) in sweeps.items():
        if name != "standard":
            figures.update(sweep_figures(f"{name}_", m))
    if report_seconds is not None:
        figures["report_seconds"] = round(report_seconds, 2)
    if bare:
        figures.update({
            "bare_stacked_seconds": round(bare["seconds"], 2),
            "bare_stack_seconds": [round(s, 2) for s in bare["per_stack"]],
            "bare_seconds_per_run_one_core": round(sum(bare["per_stack"]) / work.runs, 4),
            "overhead_vs_bare": round(sweep.seconds / bare["seconds"], 2),
        })  # fmt: skip
    if ref:
        naive_total, plain_total = ref["naive"] * work.runs, ref["plain"] * work.runs
        figures.update({
            "speedup_vs_naive": round(naive_total / sweep.seconds, 2),
            "speedup_vs_plain": round(plain_total / sweep.seconds, 2),
            "naive_seconds_per_run": round(ref["naive"], 3),
            "plain_seconds_per_run": round(ref["plain"], 3),
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
    print(f"Load average (1 min) as each part started: {loads}")
    print(f"Cores used by other processes while each part ran: {others}")
    print(f"Standard sweep: {sweep.seconds:.1f} s wall for {work.runs} runs = "
          f"{figures['runs_per_minute']:.0f} runs/min, written with {PATH_NAMES[sweep.write_path]} "
          f"({sweep.summary['stacks']} stacked fits on {sweep.summary['workers']} workers; composing "
          f"{sweep.summary['compose_seconds']:.1f} s, waiting for the workers' imports "
          f"{sweep.summary.get('worker_wait_seconds', 0):.1f} s, checking "
          f"{sweep.summary['check_seconds']:.1f} s, training and recording "
          f"{sweep.summary['train_seconds']:.1f} s)")  # fmt: skip
    for name, (_, m) in sweeps.items():
        if name != "standard":
            print(f"  {name}: {m.seconds:.1f} s ({m.summary['stacks']} stacked fits, written with "
                  f"{PATH_NAMES[m.write_path]}; training and recording {m.summary['train_seconds']:.1f} s"
                  f"{'; audits: ' + str(m.summary['audits']) if m.summary.get('audits') else ''})")  # fmt: skip
    if "speedup_vs_seed_stacks" in figures:
        print(f"Recipe stacks vs seed-and-loss stacks: {figures['speedup_vs_seed_stacks']:.2f}x "
              "(standard)" + (f", {figures['lr_speedup_vs_seed_stacks']:.2f}x (lr workload)"
                              if "lr_speedup_vs_seed_stacks" in figures else ""))  # fmt: skip
    if bare:
        print(f"(c) bare stacked loop: {bare['seconds']:.1f} s for the {work.runs} runs "
              f"({bare['stacks']} stacks on {bare['processes']} processes; a stack took "
              f"{min(bare['per_stack']):.1f}-{max(bare['per_stack']):.1f} s)  ->  overhead_vs_bare "
              f"{figures['overhead_vs_bare']:.2f}")  # fmt: skip
    if ref:
        print(f"(a) naive Lightning + MLFlowLogger per step: {ref['naive']:.2f} s/run x {work.runs} runs = "
              f"{naive_total:.0f} s  ->  speed-up {figures['speedup_vs_naive']:.1f}x")  # fmt: skip
        print(f"(b) plain PyTorch loop, no tracking:         {ref['plain']:.2f} s/run x {work.runs} runs = "
              f"{plain_total:.0f} s  ->  speed-up {figures['speedup_vs_plain']:.1f}x")  # fmt: skip
        print("    (references (a), (b): mean time per run over their sample, after a warm-up run, "
              "times the run count; their imports are not counted)")  # fmt: skip
    if report_seconds is not None:
        print(f"lossbench-report on the standard sweep: {report_seconds:.1f} s")
    print(f"MLflow: {sweep.summary['mlflow_seconds']:.1f} s of calls = {figures['mlflow_share']:.1%} "
          "of the standard sweep's wall time" + (
              f"; through the API: {figures['api_mlflow_seconds']:.1f} s = "
              f"{figures['api_mlflow_share']:.1%} of {figures['api_sweep_seconds']:.1f} s"
              if "api" in sweeps else ""))  # fmt: skip
    first_rss = sweep.rss_by_runs[0] if sweep.rss_by_runs else (0, 0.0, 0.0)
    last_rss = sweep.rss_by_runs[-1] if sweep.rss_by_runs else (0, 0.0, 0.0)
    print(f"Peak RSS of the standard sweep (main process, fork server and workers together): "
          f"{sweep.peak_rss_mb:.0f} MB (PSS {sweep.peak_pss_mb:.0f} MB); of every sweep: "
          + ", ".join(f"{n} {m.peak_rss_mb:.0f}" for n, (_, m) in sweeps.items()))  # fmt: skip
    print(f"  largest worker: {first_rss[2]:.0f} MB after {first_rss[0]} runs, {last_rss[2]:.0f} MB "
          f"after {last_rss[0]}; main process: {first_rss[1]:.0f} MB, then {last_rss[1]:.0f} MB")  # fmt: skip
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
