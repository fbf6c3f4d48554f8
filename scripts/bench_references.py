"""The references a sweep through ``lossbench-train`` is measured against, on the standard
workload's configs (part of ``scripts/bench_sweep.py``).

  (a) naive: a Lightning Trainer with Lightning's MLFlowLogger logging every step, a DataLoader,
      default checkpointing, as lightning-hydra-template sets things up; one run at a time;
  (b) plain: a hand-written PyTorch loop on in-memory tensors with per-epoch validation and no
      tracking; one run at a time;
  (c) bare stacked: the sweep's own stacks of runs trained by the plainest stacked loop: K MLPs
      as ``[K, in, out]`` weights through ``baddbmm``, each member its own loss (members with
      the same loss next to each other), init and data order (its batches gathered by index
      from its own permutation), torch.optim's Adam with ``foreach`` over all members, loss and
      accuracy on the validation split every epoch, on the test split at the end; no Lightning,
      no tracking; one process per core, one thread each. It is what the sweep's training
      would cost if nothing else did: the yardstick of ``overhead_vs_bare``.

(a) and (b) are timed per run on a sample of the configs (after a warm-up run) and multiplied
by the number of runs; (c) is the wall time of all the runs, from handing the stacks to its
processes to the last one done. Their imports (and (c)'s process start) are left out, which
favours them.
"""

from __future__ import annotations

import itertools
import math
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from bench_workloads import SEEDS, Workload


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
# (c) the bare stacked loop


def workload_configs(work: Workload) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """The standard workload's config (its first run's) and each of its losses' config."""
    from hydra import compose, initialize_config_dir

    from lossbench.config.spec import CONF_DIR, RunSpec

    losses, _, _ = work.grid()
    common = ["experiment=bench", f"dataset.source.n_samples={work.rows}",
              f"trainer.max_epochs={work.epochs}"]  # fmt: skip
    found = {}
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        for loss in losses:
            cfg = compose("train", [*common, f"loss={loss}"], return_hydra_config=True)
            found[loss] = RunSpec.from_hydra_config(cfg).cfg
    return found[losses[0]], {name: cfg["loss"] for name, cfg in found.items()}


def bare_stack(base: dict[str, Any], losses: list[dict[str, Any]], seeds: list[int]) -> float:
    """Train one stack (member k: loss config ``losses[k]``, seed ``seeds[k]``) by the bare
    stacked loop; its seconds, data loading included."""
    import torch

    from lossbench.config.spec import build
    from lossbench.problem.data import load_dataset

    start = time.perf_counter()
    data = load_dataset(base["dataset"], int(base["data_seed"]))
    x, y = torch.from_numpy(data.x_train), torch.from_numpy(data.y_train)
    xv, yv = torch.from_numpy(data.x_val), torch.from_numpy(data.y_val)
    xt, yt = torch.from_numpy(data.x_test), torch.from_numpy(data.y_test)
    k = len(seeds)
    generators = [torch.Generator().manual_seed(int(seed)) for seed in seeds]
    sizes = [data.n_features, *base["model"]["hidden"], data.n_outputs]
    weights, biases = [], []
    for n_in, n_out in itertools.pairwise(sizes):  # nn.Linear's init, member by member
        bound = 1 / math.sqrt(n_in)
        w, b = torch.empty(k, n_in, n_out), torch.empty(k, 1, n_out)
        for member, g in enumerate(generators):
            w[member].uniform_(-bound, bound, generator=g)
            b[member].uniform_(-bound, bound, generator=g)
        weights.append(w.requires_grad_())
        biases.append(b.requires_grad_())
    optimizer = torch.optim.Adam([*weights, *biases], lr=1e-3, foreach=True)
    groups: dict[str, list[int]] = {}
    for member, loss in enumerate(losses):
        groups.setdefault(repr(loss), []).append(member)
    if [m for rows in groups.values() for m in rows] != list(range(k)):
        raise ValueError("members with the same loss must be next to each other")
    functions = [(build(losses[rows[0]]), slice(rows[0], rows[-1] + 1)) for rows in groups.values()]

    def forward(h: torch.Tensor) -> torch.Tensor:
        for i, (w, b) in enumerate(zip(weights, biases, strict=True)):
            h = torch.baddbmm(b, h, w)
            if i < len(weights) - 1:
                h = torch.relu(h)
        return h

    def member_losses(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return torch.cat([fn(out[rows], target[rows]) for fn, rows in functions])

    def evaluate(xs: torch.Tensor, ys: torch.Tensor) -> None:
        with torch.no_grad():
            out = forward(xs.expand(k, -1, -1))
            member_losses(out, ys.expand(k, -1))
            ((out[..., 0] > 0).long() == ys).float().mean(1)

    batch, n = int(base["batch_size"]), len(y)
    for _ in range(int(base["trainer"]["max_epochs"])):
        order = torch.stack([torch.randperm(n, generator=g) for g in generators])
        for first in range(0, n, batch):
            idx = order[:, first : first + batch]
            loss = member_losses(forward(x[idx]), y[idx]).sum()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        evaluate(xv, yv)
    evaluate(xt, yt)
    return time.perf_counter() - start


def _bare_worker_start() -> None:
    """A bare worker: one thread, its imports done before it is timed."""
    import torch

    import lossbench.config.spec  # noqa: F401
    import lossbench.problem.data  # noqa: F401
    import lossbench.problem.losses  # noqa: F401

    torch.set_num_threads(1)


def _warm_up(base: dict[str, Any], loss: dict[str, Any]) -> float:
    """A two-member stack of two epochs: first-call costs are not per-run costs."""
    tiny = {**base, "trainer": {**base["trainer"], "max_epochs": 2}}
    time.sleep(0.5)  # long enough for every worker to take one warm-up
    return bare_stack(tiny, [loss, loss], [0, 1])


def measure_bare(work: Workload, n_stacks: int, n_processes: int) -> dict[str, Any]:
    """Reference (c): the standard workload's runs in ``n_stacks`` stacks of consecutive runs
    (as the sweep plans them: sizes differing by at most one), trained by the bare stacked loop
    in ``n_processes`` processes (each takes the next stack as it finishes one). Wall seconds
    of all of them, and each stack's own."""
    import multiprocessing

    base, loss_cfgs = workload_configs(work)
    jobs = work.jobs()
    size, extra = divmod(len(jobs), n_stacks)
    stacks, start = [], 0
    for i in range(n_stacks):
        end = start + size + (i < extra)
        stacks.append(jobs[start:end])
        start = end
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(
        n_processes, mp_context=context, initializer=_bare_worker_start
    ) as pool:
        first_loss = next(iter(loss_cfgs.values()))
        for warm in [pool.submit(_warm_up, base, first_loss) for _ in range(n_processes)]:
            warm.result()
        start_time = time.perf_counter()
        futures = []
        for stack in stacks:
            ordered = sorted(stack, key=lambda job: work.grid()[0].index(job[0]))  # by loss
            futures.append(pool.submit(bare_stack, base, [loss_cfgs[job[0]] for job in ordered],
                                       [job[3] for job in ordered]))  # fmt: skip
        per_stack = [f.result() for f in futures]
        seconds = time.perf_counter() - start_time
    return {"seconds": seconds, "per_stack": per_stack, "stacks": n_stacks,
            "processes": n_processes}  # fmt: skip
