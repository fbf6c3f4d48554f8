"""dataset=file: your own CSV, Parquet or .npz trains as a bundled dataset does; its content hash
is part of the config; bad input is refused before anything trains, naming the bad value."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient
from sklearn.datasets import load_diabetes, load_iris

from lossbench.config.checks import check_run
from lossbench.config.spec import ConfigError
from lossbench.identity import config_hash
from lossbench.problem import datafile
from lossbench.problem.data import load_dataset
from lossbench.repro import main as repro_main
from lossbench.tracking.writer import Tracker

EPOCHS = "trainer.max_epochs=3"
# The file is read as float64 and trained in float32, as the bundled set is: a CSV round trip
# (written with repr, read back with pandas' round_trip parser) loses nothing, so the metrics
# agree to float rounding; 1e-6 relative states that.
RTOL = 1e-6


def bundled_table(name: str) -> pd.DataFrame:
    """A bundled scikit-learn set as a table: its feature columns and a ``label`` column."""
    bunch = {"iris": load_iris, "diabetes": load_diabetes}[name]()
    table = pd.DataFrame(bunch.data, columns=bunch.feature_names)
    table["label"] = bunch.target
    return table


def file_overrides(path: Path, *more: str, target: str | None = "label") -> list[str]:
    overrides = ["dataset=file", f"dataset.source.path={path}", *more]
    return overrides + ([f"dataset.source.target={target}"] if target else [])


def write_csv(tmp_path: Path, table: pd.DataFrame, name: str = "data.csv") -> Path:
    path = tmp_path / name
    table.to_csv(path, index=False)
    return path


def same_split(a, b) -> bool:  # noqa: ANN001
    return all(
        np.array_equal(getattr(a, k), getattr(b, k))
        for k in ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test")
    ) and (a.task, a.n_classes, a.y_mean, a.y_std) == (b.task, b.n_classes, b.y_mean, b.y_std)


@pytest.mark.slow
@pytest.mark.parametrize(("name", "loss"), [("iris", "cross_entropy"), ("diabetes", "mse")])
def test_a_csv_of_a_bundled_set_trains_to_its_metrics(
    make_spec, tmp_path: Path, name: str, loss: str
) -> None:  # noqa: ANN001
    """iris (integer labels: classification) and diabetes (float target: regression), written
    to CSV, train to the bundled set's metrics with the same seeds and data_seed."""
    from lossbench.fit.training import fit_members

    path = write_csv(tmp_path, bundled_table(name))
    common = [EPOCHS, f"loss={loss}", "seed=3", "data_seed=2"]
    mine, bundled = (make_spec([*common, *o]) for o in (file_overrides(path), [f"dataset={name}"]))
    data_mine, data_bundled = check_run(mine), check_run(bundled)
    assert data_mine.task == data_bundled.task
    [a], [b] = fit_members([mine.cfg], data_mine), fit_members([bundled.cfg], data_bundled)
    finals = {k: v for k, v in b.final.items() if not k.startswith("time/")}
    assert len(finals) > 3
    assert {k: a.final[k] for k in finals} == pytest.approx(finals, rel=RTOL)


@pytest.mark.parametrize("fmt", ["parquet", "npz"])
def test_parquet_and_npz_give_the_bundled_split(make_spec, tmp_path: Path, fmt: str) -> None:  # noqa: ANN001
    table = bundled_table("iris")
    if fmt == "parquet":
        path = tmp_path / "iris.parquet"
        table.to_parquet(path)
        overrides = file_overrides(path)
    else:
        path = tmp_path / "iris.npz"
        np.savez(path, X=table.drop(columns="label").to_numpy(), y=table["label"].to_numpy())
        overrides = file_overrides(path, target=None)
    data = check_run(make_spec(overrides))
    assert same_split(data, check_run(make_spec(["dataset=iris"])))
    assert (data.task, data.n_classes, data.classes) == ("multiclass", 3, None)


def test_string_labels_are_classes_in_sorted_order_and_recorded(make_spec, tmp_path: Path) -> None:  # noqa: ANN001
    bunch = load_iris()
    table = bundled_table("iris")
    table["label"] = np.asarray(bunch.target_names)[bunch.target]  # setosa, versicolor, virginica
    data = check_run(make_spec(file_overrides(write_csv(tmp_path, table))))
    assert data.classes == ("setosa", "versicolor", "virginica")
    assert data.summary()["classes"] == ["setosa", "versicolor", "virginica"]  # param data.classes
    assert same_split(data, check_run(make_spec(["dataset=iris"])))  # the same class indices


def test_task_inferred_or_set(make_spec, tmp_path: Path) -> None:  # noqa: ANN001
    """Whole-number floats are a regression target unless task=classification; bools are classes."""
    rng = np.random.default_rng(0)
    table = pd.DataFrame({"a": rng.normal(size=150), "b": rng.normal(size=150)})
    table["label"] = np.tile([1.0, 2.0, 3.0], 50)
    table["flag"] = np.tile([True, False], 75)
    path = write_csv(tmp_path, table)
    assert check_run(make_spec([*file_overrides(path), "loss=mse"])).task == "regression"
    data = check_run(make_spec(file_overrides(path, "dataset.source.task=classification")))
    assert (data.task, data.n_classes, data.classes) == ("multiclass", 3, ("1.0", "2.0", "3.0"))
    data = check_run(make_spec(file_overrides(path, target="flag")))
    assert (data.task, data.n_features) == ("binary", 3)


def test_features_categorical_and_dropna(make_spec, tmp_path: Path) -> None:  # noqa: ANN001
    rng = np.random.default_rng(1)
    n = 200
    table = pd.DataFrame({"a": rng.normal(size=n), "b": rng.normal(size=n),
                          "color": np.tile(["red", "green", "blue", "red"], n // 4),
                          "label": np.tile([0, 1], n // 2)})  # fmt: skip
    path = write_csv(tmp_path, table)
    with pytest.raises(ConfigError, match=r"non-numeric feature column\(s\).*'color'.*onehot"):
        check_run(make_spec(file_overrides(path)))
    assert check_run(make_spec(file_overrides(path, "dataset.source.features=[b]"))).n_features == 1
    onehot = check_run(make_spec(file_overrides(path, "dataset.source.categorical=onehot")))
    assert onehot.n_features == 2 + 3  # a, b and one column per colour

    table.loc[[3, 10, 20], "a"] = np.nan
    path = write_csv(tmp_path, table, "holes.csv")
    with pytest.raises(ConfigError, match=r"3 of 200 rows .* missing values \(in 'a'\).*dropna"):
        check_run(make_spec(file_overrides(path, "dataset.source.features=[a,b]")))
    data = check_run(make_spec(file_overrides(path, "dataset.source.features=[a,b]",
                                              "dataset.source.dropna=true")))  # fmt: skip
    assert len(data.y_train) + len(data.y_val) + len(data.y_test) == 197
    # only the chosen columns count: b alone has no holes
    assert check_run(make_spec(file_overrides(path, "dataset.source.features=[b]"))).n_features == 1


def _bad_inputs(tmp_path: Path) -> dict[str, tuple[list[str], str]]:
    """Each bad input: its overrides and what the error must say."""
    good = write_csv(tmp_path, bundled_table("iris"), "good.csv")
    (tmp_path / "empty.csv").write_text("")
    (tmp_path / "data.txt").write_text("a,label\n1,0\n")
    (tmp_path / "a_dir").mkdir()
    one_class = bundled_table("iris").assign(label="setosa")
    nan_target = bundled_table("iris").astype({"label": float})
    nan_target.loc[5, "label"] = np.nan
    np.savez(tmp_path / "xy.npz", X=np.ones((10, 2)), y=np.arange(10) % 2)
    np.savez(tmp_path / "no_y.npz", X=np.ones((10, 2)))
    gone = tmp_path / "gone.csv"
    return {
        "missing file": (file_overrides(gone), rf"path='{gone}': no such file"),
        "no path": (["dataset=file"], r"dataset.source.path=None: give the file"),
        "unknown extension": (file_overrides(tmp_path / "data.txt"),
                              r"unknown extension '\.txt'; valid: \.csv, \.parquet, \.npz"),
        "missing target column": (file_overrides(good, target="species"),
                                  r"target='species' is not a column .*columns: sepal length \(cm\), .*label"),
        "target not set": (file_overrides(good, target=None), r"target is not set.*columns: sepal"),
        "empty file": (file_overrides(tmp_path / "empty.csv"), r"empty.csv' is empty"),
        "single class": (file_overrides(write_csv(tmp_path, one_class, "one.csv")),
                         r"target 'label' .* has a single class \('setosa'\)"),
        "target with NaN": (file_overrides(write_csv(tmp_path, nan_target, "nan.csv")),
                            r"target column 'label' .* has 1 missing value"),
        "directory": (file_overrides(tmp_path / "a_dir"), r"a_dir' is a directory"),
        "npz with a target": (file_overrides(tmp_path / "xy.npz"),
                              r"target='label', but .* is an .npz: its labels are the array y"),
        "npz without y": (file_overrides(tmp_path / "no_y.npz", target=None),
                          r"has no array y; .*it has: X"),
        "unknown task": (file_overrides(good, "dataset.source.task=ranking"),
                         r"task='ranking'; valid: classification, regression"),
        "unknown categorical": (file_overrides(good, "dataset.source.categorical=ordinal"),
                                r"categorical='ordinal'; valid: onehot"),
        "unknown feature": (file_overrides(good, "dataset.source.features=[petal]"),
                            r"features: 'petal' not a column .*columns: sepal"),
    }  # fmt: skip


BAD = [
    "missing file", "no path", "unknown extension", "missing target column", "target not set",
    "empty file", "single class", "target with NaN", "directory", "npz with a target",
    "npz without y", "unknown task", "unknown categorical", "unknown feature",
]  # fmt: skip


@pytest.mark.parametrize("case", BAD)
def test_bad_input_is_refused_before_training(make_spec, tmp_path: Path, case: str) -> None:  # noqa: ANN001
    """check_run (which a sweep runs on every job before any trains or is recorded) refuses
    each, with a message naming the bad value."""
    overrides, message = _bad_inputs(tmp_path)[case]
    with pytest.raises(ConfigError, match=message) as err:
        check_run(make_spec(overrides))
    assert str(err.value).startswith("dataset=file: ")


def test_the_content_hash_is_part_of_the_config(make_spec, tmp_path: Path) -> None:  # noqa: ANN001
    """A changed file is a different config (resume trains it again), and a config recorded
    for the old content refuses the new one, naming the path and both hashes."""
    path = write_csv(tmp_path, bundled_table("iris"))
    before = make_spec(file_overrides(path))
    assert (
        before.cfg["dataset"]["source"]["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    )
    assert config_hash(make_spec(file_overrides(path)).cfg) == config_hash(before.cfg)

    write_csv(tmp_path, bundled_table("iris").iloc[:-1])
    after = make_spec(file_overrides(path))
    assert config_hash(after.cfg) != config_hash(before.cfg)
    check_run(after)
    old, new = before.cfg["dataset"]["source"]["sha256"], after.cfg["dataset"]["source"]["sha256"]
    with pytest.raises(
        ConfigError, match=rf"'{path}' has changed: .*records sha256 {old}, .*now has {new}"
    ):
        check_run(before)


def test_a_file_is_read_once_per_process(monkeypatch, tmp_path: Path) -> None:  # noqa: ANN001
    """Many runs (other data seeds, other splits) of one file parse it once."""
    path = write_csv(tmp_path, bundled_table("iris"))
    calls = []
    read_csv, read_bytes = pd.read_csv, Path.read_bytes
    monkeypatch.setattr(pd, "read_csv", lambda *a, **k: calls.append("parse") or read_csv(*a, **k))
    monkeypatch.setattr(Path, "read_bytes", lambda self: calls.append("read") or read_bytes(self))
    source = {"_target_": "lossbench.problem.datafile.load_file", "path": str(path), "target": "label",
              "sha256": datafile.file_sha256(path)}  # fmt: skip
    for seed in range(4):
        load_dataset({"name": "file", "source": source, "val_fraction": 0.1 + seed / 20}, seed)
    # hashed once (as composing does), read and parsed at the first load; later loads: nothing
    assert calls == ["read", "read", "parse"]


@pytest.mark.slow
def test_repro_refuses_a_changed_or_missing_file(
    make_spec, store_uri: str, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:  # noqa: ANN001
    from lossbench.fit.training import fit_members

    path = write_csv(tmp_path, bundled_table("iris"))
    spec = make_spec([*file_overrides(path), "trainer.max_epochs=2",
                      f"tracking.uri={store_uri}", "tracking.experiment=datafile"])  # fmt: skip
    data = check_run(spec)
    tracker = Tracker(store_uri, "datafile")
    [run_id] = tracker.start_runs([spec], data.summary())
    tracker.finish_runs([run_id], fit_members([spec.cfg], data))
    params = MlflowClient(store_uri).get_run(run_id).data.params
    recorded = spec.cfg["dataset"]["source"]["sha256"]
    assert params["dataset.source.sha256"] == recorded

    assert repro_main([run_id, "--tracking-uri", store_uri, "--no-record"]) == 0
    capsys.readouterr()
    write_csv(tmp_path, bundled_table("iris").iloc[::-1])  # the same rows, another order
    now = hashlib.sha256(path.read_bytes()).hexdigest()
    assert repro_main([run_id, "--tracking-uri", store_uri, "--no-record"]) == 2
    err = capsys.readouterr().err
    assert f"'{path}' has changed" in err and recorded in err and now in err
    path.unlink()
    assert repro_main([run_id, "--tracking-uri", store_uri, "--no-record"]) == 2
    assert f"path='{path}': no such file" in capsys.readouterr().err
