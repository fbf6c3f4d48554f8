"""Claims as data: file checks, and the evaluator's three verdicts on known numbers
(lossbench-repro's tests are in test_repro.py)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import yaml
from scipy import stats as st

from lossbench import claims as C
from lossbench.config import check_run


def claim_file(tmp_path: Path, **fields: object) -> Path:
    body = {
        "id": "T1",
        "claim": "a is below b",
        "base": ["dataset=moons"],
        "axes": {"variant": {"a": ["optimizer=adam"], "b": ["optimizer=sgd"]}},
        "seeds": [0, 1, 2, 3, 4],
        "metric": "train/final_loss",
        "assert": [{"less": ["a", "b"]}],
    }
    body.update(fields)
    path = tmp_path / "T1.yaml"
    path.write_text(yaml.safe_dump(body))
    return path


def runs_for(claim: C.Claim, values: dict[str, list[float]], outcome: str = "finished") -> dict:
    """Run data where each group's seeds take the given values of the claim's metric."""
    data = {}
    for labels, seed, _ in claim.jobs():
        label = "/".join(labels.values())
        value = values[label][claim.seeds.index(seed)]
        status = "diverged" if (outcome == "diverged" and label == "b") else "finished"
        data[C.job_key(claim, labels, seed)] = C.RunData(
            status, {"train/final_loss": value}, {}, 10, f"{label}{seed}"
        )
    return data


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        ([0.10, 0.11, 0.12, 0.10, 0.11], [0.30, 0.31, 0.29, 0.30, 0.32], C.REPRODUCED),
        (
            [0.30, 0.31, 0.29, 0.30, 0.32],
            [0.10, 0.11, 0.12, 0.10, 0.11],
            C.NOT_REPRODUCED,
        ),  # opposite
        ([0.10, 0.30, 0.12, 0.31, 0.20], [0.12, 0.28, 0.15, 0.30, 0.19], C.INCONCLUSIVE),  # noise
    ],
    ids=["reproduced", "opposite", "inconclusive"],
)
def test_the_three_verdicts(tmp_path: Path, a: list[float], b: list[float], expected: str) -> None:
    claim = C.load_claim(claim_file(tmp_path))
    verdict = C.evaluate(claim, runs_for(claim, {"a": a, "b": b}))
    assert verdict.verdict == expected
    evidence = verdict.evidence[0]
    assert evidence.n == 5 and evidence.groups["a"].mean == pytest.approx(sum(a) / 5)
    assert (expected == C.INCONCLUSIVE) == (evidence.p_value >= 0.05)


def test_a_significant_but_small_effect_is_not_reproduced(tmp_path: Path) -> None:
    claim = C.load_claim(
        claim_file(tmp_path, **{"assert": [{"less": ["a", "b"], "min_effect": 0.5}]})
    )
    runs = runs_for(
        claim, {"a": [0.10, 0.11, 0.12, 0.10, 0.11], "b": [0.30, 0.31, 0.29, 0.30, 0.32]}
    )
    verdict = C.evaluate(claim, runs)
    assert verdict.verdict == C.NOT_REPRODUCED and "min_effect" in verdict.evidence[0].why


def test_diverged_runs_can_rank_worst(tmp_path: Path) -> None:
    metric = {"name": "train/final_loss", "diverged": "worst"}
    claim = C.load_claim(claim_file(tmp_path, metric=metric))
    runs = runs_for(claim, {"a": [0.1] * 5, "b": [0.2] * 5}, outcome="diverged")
    evidence = C.evaluate(claim, runs).evidence[0]
    expected = st.mannwhitneyu([0.1] * 5, [math.inf] * 5, alternative="two-sided").pvalue
    assert evidence.verdict == C.REPRODUCED and evidence.p_value == pytest.approx(expected)
    excluded = C.evaluate(C.load_claim(claim_file(tmp_path)), runs).evidence[0]
    assert excluded.verdict == C.INCONCLUSIVE and excluded.counts["b"]["diverged"] == 5


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([0.08, 0.085, 0.082, 0.084, 0.081], C.REPRODUCED),
        ([0.2, 0.21, 0.19, 0.2, 0.22], C.NOT_REPRODUCED),
    ],
)
def test_within_a_range(tmp_path: Path, values: list[float], expected: str) -> None:
    claim = C.load_claim(
        claim_file(
            tmp_path, axes={}, **{"assert": [{"within": {"group": "all", "range": [0.0667, 0.1]}}]}
        )
    )
    runs = {
        C.job_key(claim, {}, s): C.RunData("finished", {"train/final_loss": v}, {}, 10)
        for s, v in zip(claim.seeds, values, strict=True)
    }
    assert C.evaluate(claim, runs).verdict == expected


def test_proportions(tmp_path: Path) -> None:
    axes = {"width": {"2": ["model.hidden=[2]"], "8": ["model.hidden=[8]"]}}
    success = {"at_least": 1.0}
    claim = C.load_claim(claim_file(tmp_path, axes=axes, seeds=list(range(20)), metric="val/acc", **{
        "assert": [{"proportion_increases": ["2", "8"], "success": success}, {"proportion_positive": "2", "success": success}],
    }))  # fmt: skip
    runs = {}
    for labels, seed, _ in claim.jobs():
        solved = seed < (3 if labels["width"] == "2" else 18)
        runs[C.job_key(claim, labels, seed)] = C.RunData(
            "finished", {"val/acc": 1.0 if solved else 0.75}, {}, 10
        )
    rising, some = C.evaluate(claim, runs).evidence
    assert rising.verdict == C.REPRODUCED and rising.effect == pytest.approx(15 / 20)
    assert some.verdict == C.REPRODUCED and some.effect == pytest.approx(3 / 20)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"assert": []}, "missing 'assert'"),
        ({"assert": [{"less": ["a", "c"]}]}, "unknown group 'c'; groups: variant: a, b"),
        ({"assert": [{"frobnicate": ["a", "b"]}]}, "needs exactly one of less, greater"),
        ({"assert": [{"less": ["a"]}]}, "at least two groups"),
        ({"metric": {"name": "x", "at": "middle"}}, "at='middle'; valid: final, first"),
        ({"seeds": []}, "needs seeds"),
        ({"typo": 1}, "unknown keys \\['typo'\\]"),
        ({"seeds": 5}, "seeds must be a list, got 5"),
        ({"assert": [{"less": ["a", "b"], "alpha": "x"}]}, "alpha must be a number"),
        ({"assert": [{"above": {"group": "a"}}]}, "above needs value"),
    ],
)
def test_malformed_claim_files(tmp_path: Path, change: dict, message: str) -> None:
    with pytest.raises(C.ClaimError, match=message) as err:
        C.load_claim(claim_file(tmp_path, **change))
    assert "T1.yaml" in str(err.value)


def test_an_unknown_metric_is_named_before_training(tmp_path: Path, make_spec) -> None:  # noqa: ANN001
    claim = C.load_claim(claim_file(tmp_path, metric="grad_norm/layer1"))
    spec = make_spec(["dataset=moons"])
    keys = [C.job_key(claim, labels, seed) for labels, seed, _ in claim.jobs()]
    facts = [check_run(spec).summary()] * len(keys)
    with pytest.raises(
        C.ClaimError, match="reads metric 'grad_norm/layer1', which its runs do not record"
    ):
        C.check_metrics([claim], keys, [spec] * len(keys), facts)


def test_the_shipped_claims_load() -> None:
    loaded = C.load_claims()
    assert [c.id for c in loaded] == [f"R{i}" for i in range(1, 17)]


def test_worked_example_claim_needs_no_training() -> None:
    [r16] = C.load_claims(["R16"])
    verdict = C.evaluate(r16, {})
    assert verdict.verdict == C.REPRODUCED and len(verdict.evidence) == 3


# -- the command and its claim files -------------------------------------------------------------

WORKED = {  # a claim that trains nothing: R16's first assertion
    "id": "V1",
    "claim": "the MSE of the worked example is 0.055",
    "assert": [{"loss_value": {"loss": {"_target_": "lossbench.losses.MSE"}, "y_true": [1, 0, 1, 1],
                               "y_pred": [0.9, 0.1, 0.8, 0.6], "expected": 0.055}}],
}  # fmt: skip
BROKEN = "id: B1\nclaim: broken\nassert: [{less: [a]}]\n"
BROKEN_ERROR = "B1.yaml: assert[0]: less takes a list of at least two groups"


def claims_dir(tmp_path: Path, files: dict[str, str]) -> Path:
    folder = tmp_path / "claims"
    folder.mkdir()
    for name, text in files.items():
        (folder / name).write_text(text)
    return folder


def run_main(tmp_path: Path, store_uri: str, folder: Path, *ids: str) -> int:
    return C.main([*ids, "--claims-dir", str(folder), "--tracking-uri", store_uri,
                   "--experiment", "claims-files", "--out", str(tmp_path / "reports"),
                   "--json", str(tmp_path / "verdicts.json")])  # fmt: skip


@pytest.mark.parametrize("ids", [(), ("V1",)], ids=["all", "by id"])
def test_a_broken_claim_file_does_not_stop_the_others(
    tmp_path: Path,
    store_uri: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
    ids: tuple[str, ...],
) -> None:
    folder = claims_dir(tmp_path, {"V1.yaml": yaml.safe_dump(WORKED), "B1.yaml": BROKEN})
    monkeypatch.chdir(tmp_path)  # the sweep dir: multirun/claims/...
    assert run_main(tmp_path, store_uri, folder, *ids) == 2
    assert BROKEN_ERROR in capsys.readouterr().err
    verdicts = json.loads((tmp_path / "verdicts.json").read_text())
    assert [(v["id"], v["verdict"]) for v in verdicts] == [("V1", C.REPRODUCED)]
    assert "| V1 |" in (tmp_path / "reports" / "claims.md").read_text()


def test_an_id_in_a_broken_file_is_named_as_such(
    tmp_path: Path, store_uri: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    folder = claims_dir(tmp_path, {"V1.yaml": yaml.safe_dump(WORKED), "B1.yaml": BROKEN})
    monkeypatch.chdir(tmp_path)
    assert run_main(tmp_path, store_uri, folder, "B1") == 2
    err = capsys.readouterr().err
    assert f"claim 'B1' is in a file that failed to load: {BROKEN_ERROR}" in err
    assert not (tmp_path / "verdicts.json").exists()  # nothing judged


def test_duplicate_ids_are_an_error_naming_both_files(tmp_path: Path) -> None:
    folder = claims_dir(
        tmp_path, {"a.yaml": yaml.safe_dump(WORKED), "b.yaml": yaml.safe_dump(WORKED)}
    )
    files = C.read_claims(folder)
    assert files.claims == {}
    assert [str(e) for e in files.errors] == [f"claim id 'V1' used twice in {folder}: a.yaml, b.yaml"]  # fmt: skip
    with pytest.raises(C.ClaimError, match="claim 'V1' is ambiguous: claim id 'V1' used twice"):
        files.select(["V1"])
    with pytest.raises(C.ClaimError, match="used twice"):
        C.load_claims(directory=folder)
