"""What lossbench writes of a run, built apart from writing it: params (the flattened config and
its data's facts), its name, its result tags, the metric rows of its series, and MLflow's
per-call limits. No I/O here; :mod:`lossbench.tracking.write_paths` writes these.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from lossbench.config.spec import RunSpec
from lossbench.identity import NON_RESULT_KEYS
from lossbench.results import RunResult

# MLflow's limits for one log_batch call
MAX_METRICS_PER_BATCH = 1000
MAX_PARAMS_OR_TAGS_PER_BATCH = 100
MAX_ENTITIES_PER_BATCH = 1000
MAX_PARAM_LENGTH = 6000  # longer param values are truncated (MLflow refuses them)

MODEL_ARTIFACT_PATH = "model"  # tracking.log_model: runs:/<run id>/model
LOGGED_MODELS_TAG = "mlflow.log-model.history"  # mlflow.utils.mlflow_tags.MLFLOW_LOGGED_MODELS

MetricRow = tuple[str, float, int, int]  # key, value, timestamp (ms), step


def flatten(cfg: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Flatten a nested config into ``a.b.c -> value`` strings (lists as JSON)."""
    flat: dict[str, str] = {}
    for key, value in cfg.items():
        if key == "_partial_":
            continue
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}."))
        elif isinstance(value, list | tuple):
            flat[name] = json.dumps(value)
        else:
            flat[name] = str(value)
    return flat


def run_params(spec: RunSpec, facts: Mapping[str, Any] | None = None) -> dict[str, str]:
    """A run's params: its resolved config, flattened (no store paths), plus the facts of its
    data (``SplitData.summary()``: task, sizes) as ``data.*``."""
    kept = {k: v for k, v in spec.cfg.items() if k not in NON_RESULT_KEYS}
    params = flatten(kept)
    if facts is not None:  # the dataset's description goes in its inputs, not in params
        params.update(
            {f"data.{k}": str(v) for k, v in facts.items() if k != "dataset" and k[0] != "_"}
        )
    return {k: v[:MAX_PARAM_LENGTH] for k, v in params.items()}


def run_name(spec: RunSpec) -> str:
    """A readable, deterministic name: ``<dataset>-<loss>-<optimizer>-<scheduler>-s<seed>``,
    e.g. ``moons-focal-adamw-cosine-s3``. Other swept values show as params, not in the name."""
    choices = spec.choices
    dataset = choices.get("dataset") or str(spec.cfg["dataset"].get("name", "data"))
    parts = [dataset, *(choices.get(g, g) for g in ("loss", "optimizer", "scheduler"))]
    return "-".join([*parts, f"s{spec.seed}"])


def result_tags(result: RunResult, run_id: str | None = None) -> dict[str, str]:
    """Tags a result adds: its own (divergence, where it trained), its error's last line, and
    for a logged model (``tracking.log_model``) MLflow's ``mlflow.log-model.history`` (the
    UI's Models column)."""
    tags = dict(result.tags)
    if result.error:
        tags["lossbench.error"] = result.error.strip().splitlines()[-1][:500]
    if result.model_files and run_id is not None:
        tags[LOGGED_MODELS_TAG] = json.dumps([model_history(result.model_files, run_id)])
    return tags


def model_history(files: Mapping[str, bytes], run_id: str) -> dict[str, Any]:
    """What MLflow's ``log_model`` records of a model in ``mlflow.log-model.history``
    (``Model.get_tags_dict()``), read from the saved model's ``MLmodel`` file."""
    import yaml

    mlmodel = yaml.safe_load(files["MLmodel"])
    flavors = {
        name: {k: v for k, v in conf.items() if k != "config"} if isinstance(conf, dict) else conf
        for name, conf in (mlmodel.get("flavors") or {}).items()
    }
    kept = ("utc_time_created", "model_uuid")
    return {
        "run_id": run_id,
        "artifact_path": MODEL_ARTIFACT_PATH,
        **{k: mlmodel[k] for k in kept if k in mlmodel},
        "flavors": flavors,
    }


def metric_rows(
    series: Mapping[str, Sequence[float]],
    final: Mapping[str, float],
    start: int = 0,
    every: int = 1,
    complete: bool = True,
    steps: Mapping[str, Sequence[int]] | None = None,
) -> list[MetricRow]:
    """Per-epoch values of epochs ``start`` on (step = epoch: a value's position in its series,
    or its entry in ``steps`` for a metric not recorded every epoch), then the final values that
    have no series (test/*, time/*) at the last epoch's step.

    With ``every`` > 1 only epochs 0, every, 2*every, ... are written, and the last epoch of a
    ``complete`` series (a run's whole history, not a live part of it). A live part never
    writes an epoch off that grid, so a complete series writes its last epoch when it is off
    the grid, even below ``start``: each epoch is written once, by step, whatever the live
    parts covered."""
    now = int(time.time() * 1000)
    steps = steps or {}
    points = {
        name: list(zip(steps.get(name, range(len(values))), values, strict=True))
        for name, values in series.items()
    }
    last = max((p[-1][0] for p in points.values() if p), default=0)
    rows = [
        (name, float(value), now, step)
        for name, pairs in points.items()
        for step, value in pairs
        if step >= start and step % every == 0
    ]
    if complete:
        rows += [
            (name, float(pairs[-1][1]), now, pairs[-1][0])
            for name, pairs in points.items()
            if pairs and pairs[-1][0] % every != 0
        ]
    rows += [(k, float(v), now, last) for k, v in final.items() if k not in series]
    return rows


def batches(
    metrics: Sequence[Any], params: Sequence[Any], tags: Sequence[Any]
) -> Iterator[tuple[list[Any], list[Any], list[Any]]]:
    """Split one run's values into as few ``log_batch`` calls as MLflow's limits allow: one,
    unless the run has more than 1,000 values."""
    metrics, params, tags = list(metrics), list(params), list(tags)
    while metrics or params or tags:
        some_params, params = (
            params[:MAX_PARAMS_OR_TAGS_PER_BATCH],
            params[MAX_PARAMS_OR_TAGS_PER_BATCH:],
        )
        some_tags, tags = tags[:MAX_PARAMS_OR_TAGS_PER_BATCH], tags[MAX_PARAMS_OR_TAGS_PER_BATCH:]
        room = min(
            MAX_METRICS_PER_BATCH, MAX_ENTITIES_PER_BATCH - len(some_params) - len(some_tags)
        )
        some_metrics, metrics = metrics[:room], metrics[room:]
        yield some_metrics, some_params, some_tags


def flush_interval(value: Any) -> float | None:
    """``tracking.flush_every_s`` as seconds, or ``None`` (null: no live writes)."""
    return None if value is None else float(value)
