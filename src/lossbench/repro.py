"""``lossbench-repro RUN_ID``: train a recorded run again and compare every final metric.

The run's config comes from its ``config.yaml`` artifact; only allow-listed ``_target_``s may
be instantiated (a run in a shared store is untrusted input): lossbench's own, torch.optim's,
Lightning's Trainer, and what ``--allow-target`` names (your own metrics, say), never what the
stored config says. A run trained as a member of a
stack is re-trained with its whole stack (the members' configs are in their runs), because a
stacked fit and a fit alone agree only to float rounding (within 1e-5), not bit for bit.

Where everything that decides floating-point results is as recorded (platform, Python, package
versions, torch threads, and torch's CPU capability, torch build and device, which the run and
the re-run record where they train), the re-run must be identical: IDENTICAL. Otherwise it must
agree within ``--tolerance`` (relative), and the output lists what differs (a run recorded
before a tag existed differs in it). The re-run is recorded as a run of its own in the same
experiment, tagged ``lossbench.repro_of=<run id>``.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import yaml

from lossbench.config.checks import check_run
from lossbench.config.spec import ConfigError, RunSpec, check_targets
from lossbench.fit.platform_facts import FLOAT_TAGS
from lossbench.tracking.datasets import run_facts
from lossbench.tracking.provenance import environment_tags
from lossbench.tracking.records import NotInStore
from lossbench.tracking.store import StoreUnreachable, tracking_uri
from lossbench.tracking.sweeps import SweepInfo, new_sweep_id
from lossbench.tracking.writer import Tracker

ENVIRONMENT_TAGS = ("lossbench.platform", "lossbench.python", "lossbench.torch_threads")
SAME = "platform, Python, package versions, torch threads, CPU capability, torch build and device"

# Measured: a default 50-epoch run trained with torch's AVX512 kernels and again with its
# DEFAULT ones ends up to 1.6e-5 apart (relative, train/grad_norm); 1e-4 leaves room for that.
DEFAULT_TOLERANCE = 1e-4


@dataclass
class Repro:
    """The outcome of re-running a recorded run."""

    run_id: str
    rerun_id: str | None
    rows: list[tuple[str, float, float]]  # metric, recorded, re-run
    environment_differences: dict[str, tuple[str, str]]
    tolerance: float
    notes: list[str] = field(default_factory=list)

    @property
    def same_environment(self) -> bool:
        """Same platform, Python, package versions, thread count, CPU capability, torch build
        and device as the recorded run: only then can the metrics be equal bit for bit."""
        return not self.environment_differences

    @property
    def identical(self) -> bool:
        """Every final metric equal, bit for bit (NaN equals NaN)."""
        return all(a == b or (math.isnan(a) and math.isnan(b)) for _, a, b in self.rows)

    @property
    def within_tolerance(self) -> bool:
        """Every final metric within the relative tolerance."""
        return all(
            (math.isnan(a) and math.isnan(b))
            or math.isclose(a, b, rel_tol=self.tolerance, abs_tol=self.tolerance)
            for _, a, b in self.rows
        )

    @property
    def reproduced(self) -> bool:
        """Identical where the environment is the same; within tolerance elsewhere."""
        return self.identical if self.same_environment else self.within_tolerance

    def verdict(self) -> str:
        """One line for the terminal."""
        if self.same_environment:
            return (
                "IDENTICAL: every final metric equals the record"
                if self.identical
                else f"NOT REPRODUCED: same {SAME}, but the metrics differ"
            )
        verdict = "WITHIN TOLERANCE" if self.within_tolerance else "NOT REPRODUCED"
        return f"{verdict} (relative tolerance {self.tolerance:g}; the environment differs)"


def _config_of(client: Any, run_id: str, allow: Sequence[str] = ()) -> dict[str, Any]:
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as tmp:
        try:
            path = client.download_artifacts(run_id, "config.yaml", tmp)
        except Exception as err:  # noqa: BLE001 (MLflow raises several kinds)
            raise ConfigError(
                f"run {run_id} has no config.yaml artifact to rebuild it from ({err})"
            ) from err
        cfg = yaml.safe_load(Path(path).read_text())
    check_targets(cfg, allow=allow)
    return cfg


def reproduce(
    run_id: str,
    uri: str,
    tolerance: float = DEFAULT_TOLERANCE,
    record: bool = True,
    allow_targets: Sequence[str] = (),
) -> Repro:
    """Re-train run ``run_id`` of the store at ``uri`` and compare its final metrics.
    ``allow_targets``: more ``_target_``s (names, or module and package prefixes) its config
    may instantiate (see :func:`lossbench.config.spec.check_targets`)."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from lossbench.fit.training import fit_members

    client = MlflowClient(uri)
    try:
        run = client.get_run(run_id)
    except MlflowException as err:
        raise NotInStore(f"no run {run_id!r} in {uri}") from err
    tags = run.data.tags
    cfg = _config_of(client, run_id, allow_targets)
    spec = RunSpec(cfg, {k.removeprefix("lossbench.choice."): v for k, v in tags.items() if k.startswith("lossbench.choice.")},
                   tags.get("lossbench.overrides", "").split())  # fmt: skip
    try:
        data = check_run(spec)  # anything that no longer exists (or a changed file) fails here
    except ConfigError as err:
        raise ConfigError(f"run {run_id} cannot be re-run as recorded: {err}") from err
    notes: list[str] = []
    cfgs, member = [cfg], 0
    members = int(tags.get("lossbench.members", "1"))
    if members > 1 and tags.get("lossbench.trained_alone") != "true":
        siblings = client.search_runs(
            [run.info.experiment_id], f"tags.`lossbench.stack_id` = '{tags['lossbench.stack_id']}'"
        )
        by_index = {int(r.data.tags["lossbench.stack_index"]): r.info.run_id for r in siblings}
        if sorted(by_index) == list(range(members)):
            cfgs = [_config_of(client, by_index[i], allow_targets) for i in range(members)]
            member = int(tags["lossbench.stack_index"])
            notes.append(f"trained with its stack of {members} runs, as recorded")
        else:
            notes.append(f"its stack of {members} runs is incomplete in the store: trained alone")
    result = fit_members(cfgs, data)[member]

    recorded = run.data.metrics
    rerun = {**result.final}
    rows = [(name, float(recorded[name]), float(rerun.get(name, math.nan))) for name in sorted(recorded)
            if not name.startswith("time/")]  # fmt: skip
    now = environment_tags()
    keys = sorted(
        {k for k in (*tags, *now) if k.startswith("lossbench.version.")}
        | set(ENVIRONMENT_TAGS)
        | set(FLOAT_TAGS)
    )
    # the CPU capability, torch build and device of the re-run: from where it trained
    current = {**now, "lossbench.torch_threads": str(cfg.get("threads", 1)), **result.tags}
    differences = {
        k: (tags.get(k, "?"), current.get(k, "?"))
        for k in keys
        if tags.get(k, "?") != current.get(k, "?")
    }

    rerun_id = None
    if record:
        experiment = MlflowClient(uri).get_experiment(run.info.experiment_id).name
        tracker = Tracker(uri, experiment)
        facts = run_facts(cfg["dataset"], int(cfg["data_seed"]), data)
        rerun_id = tracker.start_run(spec, facts, SweepInfo(new_sweep_id()),
                                     tags={"lossbench.role": "repro", "lossbench.repro_of": run_id})  # fmt: skip
        tracker.finish_run(rerun_id, result)
    return Repro(run_id, rerun_id, rows, differences, tolerance, notes)


def print_repro(repro: Repro) -> None:
    """The comparison table and the verdict."""
    from rich.console import Console
    from rich.table import Table

    console = Console(width=None if sys.stdout.isatty() else 160)
    table = Table(title=f"re-run of {repro.run_id}", title_justify="left")
    for name in ("metric", "recorded", "re-run", "difference"):
        table.add_column(name, justify="left" if name == "metric" else "right")
    for name, a, b in repro.rows:
        table.add_row(name, f"{a:.9g}", f"{b:.9g}", f"{b - a:.3g}")
    console.print(table)
    for note in repro.notes:
        console.print(f"note: {note}")
    if repro.environment_differences:
        console.print("environment differences (recorded -> now):")
        for key, (then, now) in repro.environment_differences.items():
            console.print(f"  {key}: {then} -> {now}")
    else:
        console.print(f"environment: same {SAME}")
    console.print(repro.verdict(), style="bold green" if repro.reproduced else "bold red")
    if repro.rerun_id:
        console.print(
            f"re-run recorded as run {repro.rerun_id} (tag lossbench.repro_of={repro.run_id})"
        )


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``lossbench-repro``."""
    parser = argparse.ArgumentParser(prog="lossbench-repro", description=__doc__.split("\n\n")[0])
    parser.add_argument("run_id", help="the MLflow run id to re-train")
    parser.add_argument("--tolerance", type=float, default=DEFAULT_TOLERANCE,
                        help="relative tolerance where the environment differs: platform, "
                             f"versions, threads, CPU capability, torch build or device "
                             f"(default {DEFAULT_TOLERANCE:g})")  # fmt: skip
    parser.add_argument("--allow-target", action="append", default=[], metavar="NAME",
                        help="also allow this _target_ in the stored config: a function or "
                             "class, or a module or package and everything in it (e.g. "
                             "mypkg.metrics for your own metrics); repeatable. Only lossbench.*, "
                             "torch.optim.* and pytorch_lightning.Trainer are allowed otherwise")  # fmt: skip
    parser.add_argument("--no-record", action="store_true", help="do not record the re-run")
    parser.add_argument("--tracking-uri", help="MLflow store (default: as training)")
    args = parser.parse_args(argv)
    uri = args.tracking_uri or tracking_uri({"root": "mlruns"})
    try:
        repro = reproduce(args.run_id, uri, args.tolerance, record=not args.no_record,
                          allow_targets=args.allow_target)  # fmt: skip
    except (NotInStore, ConfigError, StoreUnreachable) as err:
        print(f"lossbench-repro: {err}", file=sys.stderr)
        return 2
    print_repro(repro)
    return 0 if repro.reproduced else 1


if __name__ == "__main__":
    sys.exit(main())
