"""``tracking.log_model=true``: each trained member saved as an MLflow PyTorch model.

Runs where the model trains (a worker, with torch): :func:`saved_members` turns member ``k`` of a
stacked model into a plain ``nn.Module`` (:meth:`lossbench.problem.models.StackedMLP.member`) and saves
it with ``mlflow.pytorch.save_model`` (an input example of five test rows, the signature of its
outputs), returning the saved directory's files as bytes. The recording process writes them under
the run's ``model`` artifacts, so ``mlflow.pytorch.load_model(f"runs:/{run_id}/model")`` loads
it; that process never imports torch.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from lossbench.problem.data import SplitData
    from lossbench.problem.models import StackedMLP

EXAMPLE_ROWS = 5


def save_member(model: StackedMLP, member: int, data: SplitData) -> dict[str, bytes]:
    """Member ``member`` of ``model`` saved as an MLflow PyTorch model: relative path -> bytes
    of each file of the saved directory."""
    import mlflow.pytorch
    import torch
    from mlflow.models import infer_signature

    module = model.member(member).cpu()
    example = data.x_test[:EXAMPLE_ROWS] if len(data.x_test) else data.x_train[:EXAMPLE_ROWS]
    with torch.no_grad():
        output = module(torch.from_numpy(example)).numpy()
    root = Path(tempfile.mkdtemp(prefix="lossbench-model-"))
    try:
        path = root / "model"
        mlflow.pytorch.save_model(
            module,
            str(path),
            signature=infer_signature(example, output),
            input_example=example,
            # a pickled nn.Sequential of torch's own modules: loads as one, wherever torch is
            # (MLflow's default, torch.export's pt2, loads as a GraphModule and takes ~2 s)
            serialization_format="pickle",
            # pinned torch and cloudpickle, as MLflow's default: inferring them would load the
            # model again in a subprocess
            pip_requirements=mlflow.pytorch.get_default_pip_requirements(),
        )
        return {
            str(file.relative_to(path)): file.read_bytes()
            for file in sorted(path.rglob("*"))
            if file.is_file()
        }
    finally:
        shutil.rmtree(root, ignore_errors=True)


def wants_models(cfg: dict) -> bool:
    """Whether a run's config asks for its model to be logged (``tracking.log_model``)."""
    tracking = cfg.get("tracking") or {}
    return bool(tracking.get("enabled", True) and tracking.get("log_model", False))
