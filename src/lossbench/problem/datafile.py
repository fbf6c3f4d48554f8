"""``dataset=file``: a table of your own (CSV, Parquet, or NumPy ``.npz`` with arrays X and y).

:func:`load_file` is a source like those of :mod:`lossbench.problem.data` (it returns a
:class:`~lossbench.problem.sources.RawData`); splits, standardization and ``data_seed`` are
:func:`lossbench.problem.data.load_dataset`'s, as for every other dataset.

Provenance: ``conf/dataset/file.yaml`` fills ``dataset.source.sha256`` with the file's content
hash when the config is composed (the ``file_sha256`` resolver), so the hash is part of the
resolved config: of the run's params, its ``config.yaml`` and its config hash. A changed file
is therefore a different config (resume trains it again), and :func:`load_file` refuses to read
a file whose content no longer has the hash its config records (``lossbench-repro`` of a run
whose file changed or is gone fails, naming the path and both hashes).

Each distinct file is read and parsed once per process (cached by path and content hash).
NumPy only at import; pandas (and pyarrow, for Parquet) when a file is read.
"""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lossbench.problem.data import DatasetError
from lossbench.problem.sources import RawData

FORMATS = (".csv", ".parquet", ".npz")
TASK_CHOICES = ("classification", "regression")
CATEGORICAL_CHOICES = ("onehot",)
_CACHE_SIZE = 8  # parsed files kept per process

# (resolved path, size, mtime_ns, inode) -> sha256 hex, so that composing the jobs of a sweep
# hashes the file once, not once per job
_digests: dict[tuple[str, int, int, int], str] = {}
# (resolved path, sha256) -> the parsed table (pandas DataFrame)
_tables: dict[tuple[str, str], Any] = {}


def _stat_key(path: Path) -> tuple[str, int, int, int]:
    st = path.stat()
    return (str(path.resolve()), st.st_size, st.st_mtime_ns, st.st_ino)


def file_sha256(path: Any) -> str | None:
    """The sha256 of a file's content (hex), or ``None`` where ``path`` names no readable file:
    :func:`load_file` then says what is wrong. The ``${file_sha256:...}`` resolver."""
    try:
        p = Path(str(path)).expanduser()
        if not p.is_file():
            return None
        key = _stat_key(p)
        if key not in _digests:
            _digests[key] = hashlib.sha256(p.read_bytes()).hexdigest()
        return _digests[key]
    except OSError:
        return None


def _check_path(path: Any) -> Path:
    """The path as a file that exists, with a known extension; else a clear error."""
    if not isinstance(path, str | os.PathLike) or not str(path).strip() or str(path) == "???":
        raise DatasetError(
            f"dataset.source.path={path!r}: give the file to read, "
            f"dataset.source.path=PATH ({', '.join(FORMATS)})"
        )
    p = Path(path).expanduser()
    where = "" if p.is_absolute() else f" (relative to {Path.cwd()})"
    if p.is_dir():
        raise DatasetError(
            f"dataset.source.path={str(path)!r} is a directory{where}; give a file "
            f"({', '.join(FORMATS)})"
        )
    if not p.exists():
        raise DatasetError(f"dataset.source.path={str(path)!r}: no such file{where}")
    if p.suffix.lower() not in FORMATS:
        raise DatasetError(
            f"dataset.source.path={str(path)!r} has an unknown extension {p.suffix!r}; "
            f"valid: {', '.join(FORMATS)}"
        )
    return p


def _read(p: Path, sha256: str | None) -> tuple[Any, str]:
    """The file's table (a DataFrame; for .npz, columns x0..x{n-1} and y) and its content hash,
    read once per process; checks the content against the hash the config records."""
    import pandas as pd

    digest = _digests.get(_stat_key(p))  # hashed already (composing): no need to read again
    content = None
    if digest is None or (str(p.resolve()), digest) not in _tables:
        content = p.read_bytes()
        digest = hashlib.sha256(content).hexdigest()
    if sha256 is not None and sha256 != digest:
        raise DatasetError(
            f"dataset.source.path={str(p)!r} has changed: the config records sha256 {sha256}, "
            f"the file now has {digest} (a changed file is a different dataset; a new launch "
            "of the run records the new hash as a new config)"
        )
    key = (str(p.resolve()), digest)
    if key in _tables:
        return _tables[key], digest
    assert content is not None
    if not content:
        raise DatasetError(f"dataset.source.path={str(p)!r} is empty (0 bytes)")
    suffix = p.suffix.lower()
    try:
        if suffix == ".csv":
            # round_trip: floats read back exactly as written (the fast parser may be 1 ulp off)
            table = pd.read_csv(io.BytesIO(content), float_precision="round_trip")
        elif suffix == ".parquet":
            table = pd.read_parquet(io.BytesIO(content))
        else:
            table = _npz_table(p, content)
    except DatasetError:
        raise
    except pd.errors.EmptyDataError as err:
        raise DatasetError(f"dataset.source.path={str(p)!r} is empty ({err})") from err
    except Exception as err:  # noqa: BLE001 (pandas, pyarrow and numpy raise many kinds)
        raise DatasetError(
            f"dataset.source.path={str(p)!r} cannot be read as {suffix}: "
            f"{type(err).__name__}: {err}"
        ) from err
    table.columns = [str(c) for c in table.columns]
    if len(table) == 0:
        raise DatasetError(f"dataset.source.path={str(p)!r} has no rows")
    while len(_tables) >= _CACHE_SIZE:
        _tables.pop(next(iter(_tables)))
    _tables[key] = table
    return table, digest


def _npz_table(p: Path, content: bytes) -> Any:
    import pandas as pd

    with np.load(io.BytesIO(content), allow_pickle=False) as arrays:
        missing = [k for k in ("X", "y") if k not in arrays.files]
        if missing:
            raise DatasetError(
                f"dataset.source.path={str(p)!r} has no array {', '.join(missing)}; an .npz "
                f"needs arrays X (rows x features) and y (one label per row); it has: "
                f"{', '.join(arrays.files) or 'none'}"
            )
        x, y = arrays["X"], arrays["y"]
    if x.ndim != 2 or y.ndim != 1 or len(x) != len(y):
        raise DatasetError(
            f"dataset.source.path={str(p)!r}: X must be 2-D and y 1-D with one label per row; "
            f"got X{x.shape} and y{y.shape}"
        )
    table = pd.DataFrame(x, columns=[f"x{i}" for i in range(x.shape[1])])
    table["y"] = y
    return table


def _columns_list(columns: Sequence[str]) -> str:
    shown = ", ".join(columns[:50])
    return shown + (f", ... ({len(columns)} in all)" if len(columns) > 50 else "")


def load_file(
    *,
    seed: int,
    path: str,
    target: str | None = None,
    task: str | None = None,
    features: Sequence[str] | None = None,
    categorical: str | None = None,
    dropna: bool = False,
    sha256: str | None = None,
) -> RawData:
    """Read a CSV, Parquet or ``.npz`` file as a dataset source (see the module docstring).

    - ``target``: the label column (CSV, Parquet); an ``.npz`` has its labels in ``y``.
    - ``task``: ``classification`` or ``regression``; ``None`` infers it from the labels:
      integer, bool or string labels are classes, floats a regression target (also floats
      that happen to be whole numbers: set ``task=classification`` for those).
    - ``features``: the feature columns; ``None`` takes every column but the target.
    - ``categorical``: ``onehot`` one-hot encodes non-numeric feature columns; ``None`` refuses
      them, naming them.
    - ``dropna``: drop rows with a missing value in the target or a feature; ``False`` refuses
      them, giving the count.
    - ``sha256``: the content hash the config records; a file with other content is refused.
    ``seed`` is unused (a file is what it is).
    """
    import pandas as pd

    if task not in (None, *TASK_CHOICES):
        raise DatasetError(
            f"dataset.source.task={task!r}; valid: {', '.join(TASK_CHOICES)}, or null to infer it"
        )
    if categorical not in (None, *CATEGORICAL_CHOICES):
        raise DatasetError(
            f"dataset.source.categorical={categorical!r}; valid: onehot, or null (non-numeric "
            "features are then an error)"
        )
    if not isinstance(dropna, bool):
        raise DatasetError(f"dataset.source.dropna={dropna!r} must be true or false")
    p = _check_path(path)
    table, _ = _read(p, sha256)
    columns = list(table.columns)
    shown = repr(str(path))

    if p.suffix.lower() == ".npz":
        if target is not None:
            raise DatasetError(
                f"dataset.source.target={target!r}, but {shown} is an .npz: its labels are the "
                "array y; leave dataset.source.target unset"
            )
        target = "y"
    elif target is None:
        raise DatasetError(
            f"dataset.source.target is not set: name the label column of {shown} "
            f"(dataset.source.target=COLUMN); columns: {_columns_list(columns)}"
        )
    elif str(target) not in columns:
        raise DatasetError(
            f"dataset.source.target={target!r} is not a column of {shown}; columns: "
            f"{_columns_list(columns)}"
        )
    target = str(target)

    if features is None:
        chosen = [c for c in columns if c != target]
    else:
        if isinstance(features, str) or not isinstance(features, Sequence):
            raise DatasetError(f"dataset.source.features={features!r} must be a list of columns")
        chosen = [str(c) for c in features]
        unknown = [c for c in chosen if c not in columns]
        if unknown:
            raise DatasetError(
                f"dataset.source.features: {', '.join(map(repr, unknown))} not a column of "
                f"{shown}; columns: {_columns_list(columns)}"
            )
        if target in chosen:
            raise DatasetError(f"dataset.source.features includes the target {target!r}")
        if len(set(chosen)) != len(chosen):
            raise DatasetError(f"dataset.source.features={chosen} names a column twice")
    if not chosen:
        raise DatasetError(f"{shown} has no feature columns besides the target {target!r}")

    frame = table[[*chosen, target]]
    if frame[target].isna().any() and not dropna:
        raise DatasetError(
            f"the target column {target!r} of {shown} has {int(frame[target].isna().sum())} "
            "missing value(s) (NaN or empty); set dataset.source.dropna=true to drop those rows"
        )
    incomplete = frame.isna().any(axis=1)
    if incomplete.any():
        if not dropna:
            where = [c for c in chosen if frame[c].isna().any()]
            raise DatasetError(
                f"{int(incomplete.sum())} of {len(frame)} rows of {shown} have missing values "
                f"(in {', '.join(map(repr, where))}); set dataset.source.dropna=true to drop them"
            )
        frame = frame[~incomplete]
        if len(frame) == 0:
            raise DatasetError(f"every row of {shown} has a missing value: none left to train on")

    labels = frame[target]
    numeric = pd.api.types.is_numeric_dtype(labels) or pd.api.types.is_bool_dtype(labels)
    if task is None:
        task = "regression" if pd.api.types.is_float_dtype(labels) else "classification"
    if task == "regression":
        if not numeric:
            raise DatasetError(
                f"dataset.source.task=regression, but the target {target!r} of {shown} is not "
                f"numeric ({labels.dtype}); use task=classification"
            )
        y = labels.to_numpy(dtype=np.float64)
    else:
        y = labels.to_numpy() if numeric else labels.astype(str).to_numpy(dtype=str)
        classes = pd.unique(labels)
        if len(classes) < 2:
            raise DatasetError(
                f"the target {target!r} of {shown} has a single class ({classes[0]!r}); "
                "classification needs two or more (a numeric target can be "
                "dataset.source.task=regression)"
            )

    x = frame[chosen]
    text = [c for c in chosen if not (pd.api.types.is_numeric_dtype(x[c])
                                      or pd.api.types.is_bool_dtype(x[c]))]  # fmt: skip
    if text:
        if categorical != "onehot":
            raise DatasetError(
                f"non-numeric feature column(s) of {shown}: {', '.join(map(repr, text))}; set "
                "dataset.source.categorical=onehot to one-hot encode them, or pick numeric "
                "columns with dataset.source.features=[...]"
            )
        x = pd.get_dummies(x.astype({c: str for c in text}), columns=text, dtype=np.float64)
    return RawData(x.to_numpy(dtype=np.float64), y, task)
