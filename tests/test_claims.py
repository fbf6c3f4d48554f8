"""Claims as data: file checks, and the evaluator's three verdicts on known numbers
(lossbench-repro's tests are in test_repro.py)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from scipy import stats as st

from lossbench import claims as C
from lossbench.claims import render
from lossbench.config.checks import check_run


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
    """R1-R16, and the fair variants: the same assertions, each arm at its best lr on a grid
    of at least 5 values chosen on validation."""
    loaded = {c.id: c for c in C.load_claims()}
    fair = ["R4-fair", "R5-fair", "R6-fair", "R8-fair"]
    assert sorted(loaded) == sorted([f"R{i}" for i in range(1, 17)] + fair + ["R8-datasets"])
    datasets, r8 = loaded["R8-datasets"], loaded["R8"]  # R8's recipe, on six datasets
    assert len(datasets.axes["dataset"]) == 6 and datasets.axes["scheduler"] == r8.axes["scheduler"]
    assert [
        (a.kind, a.groups, a.options["across"], a.options["at_least"]) for a in datasets.assertions
    ] == [
        ("beats", ["step", "constant"], "dataset", 5),
        ("beats", ["exponential", "constant"], "dataset", 5),
    ]
    assert set(datasets.base) | {"dataset=moons"} == set(r8.base)  # moons: R8's own runs
    for claim_id in fair:
        claim, fixed = loaded[claim_id], loaded[claim_id.removesuffix("-fair")]
        assert claim.nuisance is not None and claim.nuisance.axis == "lr"
        assert len(claim.axes["lr"]) >= 5 and claim.nuisance.select.name.startswith("val/")
        assert [a.kind for a in claim.assertions] == [a.kind for a in fixed.assertions]
        unfixed = [[g.replace(",lr=1e-3", "").replace(",lr=1e-2", "") for g in a.groups]
                   for a in fixed.assertions]  # R6 names each optimizer's fixed lr  # fmt: skip
        assert [[g.removeprefix("optimizer=") for g in a] for a in unfixed] == [
            a.groups for a in claim.assertions
        ]


def test_worked_example_claim_needs_no_training() -> None:
    [r16] = C.load_claims(["R16"])
    verdict = C.evaluate(r16, {})
    assert verdict.verdict == C.REPRODUCED and len(verdict.evidence) == 3


# -- the command and its claim files -------------------------------------------------------------

WORKED = {  # a claim that trains nothing: R16's first assertion
    "id": "V1",
    "claim": "the MSE of the worked example is 0.055",
    "assert": [{"loss_value": {"loss": {"_target_": "lossbench.problem.losses.MSE"}, "y_true": [1, 0, 1, 1],
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


# -- best over a nuisance axis -------------------------------------------------------------------

LRS = ["0.01", "0.1", "1"]
NUISANCE = {
    "axes": {
        "variant": {"a": ["optimizer=adam"], "b": ["optimizer=sgd"]},
        "lr": {lr: [f"optimizer.lr={lr}"] for lr in LRS},
    },
    "nuisance": {"axis": "lr", "select": "val/loss"},
    "metric": "test/loss",
}


def noisy(base: float, group: str, lr: str, seed: int) -> float:
    """A run's value: its group's and lr's base, plus something for the seed."""
    return base + (0.01 if group == "a" else 0.013) * seed + 0.001 * LRS.index(lr) * seed**2


def nuisance_runs(claim: C.Claim, table: dict[tuple[str, str], tuple[float, float, int]]) -> dict:
    """Runs where group g at lr has val/loss and test/loss about v and t, and its first ``k``
    seeds diverged: table[(g, lr)] = (v, t, k)."""
    data = {}
    for labels, seed, _ in claim.jobs():
        group, lr = labels["variant"], labels["lr"]
        val, test, diverged = table[(group, lr)]
        outcome = "diverged" if seed < diverged else "finished"
        metrics = {
            "val/loss": noisy(val, group, lr, seed),
            "test/loss": noisy(test, group, lr, seed),
        }
        data[C.job_key(claim, labels, seed)] = C.RunData(outcome, metrics, {}, 10)
    return data


# (val, test, diverged seeds) per group and lr. In every case a's lr=1 has the best TEST loss
# but is never the best on validation: a choice made on test would show up.
SELECTIONS = {
    "best-val-mean": (
        {("a", "0.01"): (0.5, 0.5, 0), ("a", "0.1"): (0.2, 0.3, 0), ("a", "1"): (0.4, 0.1, 0),
         ("b", "0.01"): (0.3, 0.4, 0), ("b", "0.1"): (0.6, 0.6, 0), ("b", "1"): (0.7, 0.7, 0)},
        {"a": "0.1", "b": "0.01"},
        ["b: lr=0.01 is the grid's smallest value: the grid may be too narrow"],
    ),
    "diverged-loses": (
        {("a", "0.01"): (0.5, 0.5, 0), ("a", "0.1"): (0.3, 0.3, 0), ("a", "1"): (0.35, 0.1, 0),
         ("b", "0.01"): (0.6, 0.6, 0), ("b", "0.1"): (0.4, 0.4, 0), ("b", "1"): (0.1, 0.1, 1)},
        {"a": "0.1", "b": "0.1"},
        ["b: lr=1 has a better mean val/loss but 1/5 runs diverged: ranked below"],
    ),
    "all-lrs-diverge": (
        {("a", "0.01"): (0.5, 0.5, 0), ("a", "0.1"): (0.3, 0.3, 0), ("a", "1"): (0.4, 0.1, 0),
         ("b", "0.01"): (0.6, 0.6, 2), ("b", "0.1"): (0.2, 0.4, 1), ("b", "1"): (0.1, 0.1, 3)},
        {"a": "0.1", "b": "0.1"},
        ["b: diverged runs at every lr that has finished runs; lr=0.1 has the fewest (1/5)",
         "b: lr=1 has a better mean val/loss but 3/5 runs diverged: ranked below"],
    ),
    "every-run-diverges": (
        {("a", "0.01"): (0.5, 0.5, 0), ("a", "0.1"): (0.3, 0.3, 0), ("a", "1"): (0.4, 0.1, 0),
         ("b", "0.01"): (0.6, 0.6, 5), ("b", "0.1"): (0.2, 0.4, 5), ("b", "1"): (0.1, 0.1, 5)},
        {"a": "0.1", "b": "0.01"},
        ["b: every run diverged at every lr"],
    ),
}  # fmt: skip


@pytest.mark.parametrize(("table", "chosen", "notes"), SELECTIONS.values(), ids=SELECTIONS)
def test_each_group_is_judged_at_its_best_value_on_validation(
    tmp_path: Path, table: dict, chosen: dict[str, str], notes: list[str]
) -> None:
    claim = C.load_claim(claim_file(tmp_path, **NUISANCE))
    evidence = C.evaluate(claim, nuisance_runs(claim, table)).evidence[0]
    assert evidence.chosen == chosen and evidence.notes == notes
    for group, lr in chosen.items():  # judged on test/loss at the chosen lr, diverged runs left out
        val, test, diverged = table[(group, lr)]
        finished = [noisy(test, group, lr, seed) for seed in range(diverged, 5)]
        assert evidence.groups[group].n == len(finished)
        if finished:
            assert evidence.groups[group].mean == pytest.approx(np.mean(finished), abs=1e-12)
        assert evidence.counts[group]["diverged"] == diverged
    expected_val = np.mean([noisy(table[("a", "0.1")][0], "a", "0.1", s) for s in range(5)])
    assert evidence.selection["a"]["0.1"] == pytest.approx(expected_val, abs=1e-12)
    if "every-run" in str(notes):
        assert evidence.verdict == C.INCONCLUSIVE and math.isnan(evidence.selection["b"]["1"])


@pytest.mark.parametrize(
    ("select", "chosen"),
    [("val/acc", "1"), ({"name": "val/acc", "at": "best"}, "0.1"), ("val/loss", "0.01")],
)
def test_the_selection_direction_follows_the_metric(
    tmp_path: Path, select: object, chosen: str
) -> None:
    """Highest accuracy, lowest loss; ``at: best`` reads the history (best epoch)."""
    fields = {**NUISANCE, "nuisance": {"axis": "lr", "select": select}}
    claim = C.load_claim(claim_file(tmp_path, **fields))
    acc = {"0.01": (0.70, 0.75), "0.1": (0.80, 0.95), "1": (0.85, 0.86)}  # lr -> final, best
    loss = {"0.01": 0.2, "0.1": 0.3, "1": 0.4}
    runs = {}
    for labels, seed, _ in claim.jobs():
        final, best = acc[labels["lr"]]
        metrics = {"val/acc": final, "val/loss": loss[labels["lr"]], "test/loss": 0.5}
        runs[C.job_key(claim, labels, seed)] = C.RunData(
            "finished", metrics, {"val/acc": [0.5, best, final]}, 3
        )
    evidence = C.evaluate(claim, runs).evidence[0]
    assert evidence.chosen == {"a": chosen, "b": chosen}


def test_the_chosen_values_and_notes_are_in_the_table_and_json(tmp_path: Path) -> None:
    table, chosen, notes = SELECTIONS["best-val-mean"]
    claim = C.load_claim(claim_file(tmp_path, **NUISANCE))
    verdict = C.evaluate(claim, nuisance_runs(claim, table))
    [row] = render.verdict_rows([verdict])
    assert "a at lr=0.1: " in row[5] and "b at lr=0.01: " in row[5]
    assert row[9].endswith(f"note: {notes[0]}")
    [data] = json.loads(json.dumps(C.verdicts_json([verdict])))
    assert data["nuisance"] == {"axis": "lr", "select": "val/loss", "mode": "min"}
    [assertion] = data["assertions"]
    assert assertion["chosen"] == {"a": {"lr": "0.1"}, "b": {"lr": "0.01"}}
    assert assertion["notes"] == notes
    assert assertion["selection"]["b"]["0.01"] == pytest.approx(0.3 + 2 * 0.013, abs=1e-12)


def test_a_spread_over_the_nuisance_axis_reads_every_value(tmp_path: Path) -> None:
    spread = {"name": "test/loss", "spread_over": "lr"}
    claim = C.load_claim(claim_file(tmp_path, **NUISANCE, **{"assert": [{"less": ["a", "b"], "metric": spread}]}))  # fmt: skip
    evidence = C.evaluate(claim, nuisance_runs(claim, SELECTIONS["best-val-mean"][0])).evidence[0]
    tests = [0.5, 0.3, 0.1]  # a's test/loss bases at each lr
    spreads = [np.std([noisy(t, "a", lr, s) for t, lr in zip(tests, LRS, strict=True)], ddof=1) for s in range(5)]  # fmt: skip
    assert evidence.chosen == {} and evidence.groups["a"].mean == pytest.approx(np.mean(spreads))


# -- equivalence ---------------------------------------------------------------------------------

EQUIVALENT = {"assert": [{"equivalent": ["a", "b"], "margin": 0.01}], "metric": "train/final_loss"}


@pytest.mark.parametrize(
    ("a", "b", "expected", "why"),
    [
        ([0.30, 0.32, 0.29, 0.31, 0.30], [0.301, 0.319, 0.292, 0.309, 0.302], C.REPRODUCED, "inside ±0.01"),
        ([0.30, 0.32, 0.29, 0.31, 0.30], [0.20, 0.22, 0.18, 0.21, 0.20], C.NOT_REPRODUCED, "> 0.01 is significant"),
        ([0.30, 0.32, 0.29, 0.31, 0.30], [0.29, 0.34, 0.27, 0.30, 0.31], C.INCONCLUSIVE, "not inside ±0.01"),
        ([0.30, 0.30, 0.30, 0.30, 0.30], [0.30, 0.30, 0.30, 0.30, 0.30], C.REPRODUCED, "inside ±0.01"),
    ],
    ids=["equivalent", "different", "undecided", "the-same-runs"],
)  # fmt: skip
def test_equivalence_verdicts(
    tmp_path: Path, a: list[float], b: list[float], expected: str, why: str
) -> None:
    claim = C.load_claim(claim_file(tmp_path, **EQUIVALENT))
    evidence = C.evaluate(claim, runs_for(claim, {"a": a, "b": b})).evidence[0]
    assert evidence.verdict == expected and why in evidence.why and "90% CI" in evidence.why
    assert evidence.effect == pytest.approx(np.mean(a) - np.mean(b), abs=1e-12)  # metric units
    assert evidence.n == 5 and "paired TOST" in evidence.why
    assert (evidence.p_value < 0.05) == (expected != C.INCONCLUSIVE)  # the deciding test's p
    assert C.describe(evidence.assertion) == "train/final_loss: a ≡ b within ±0.01"


# -- bad input: each a ClaimError naming the file, the value and the choices, before training ----


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"nuisance": {"axis": "lrr", "select": "val/loss"}},
         "nuisance axis 'lrr' is not an axis of the claim; axes: lr, variant"),
        ({"nuisance": {"select": "val/loss"}}, "nuisance axis None is not an axis"),
        ({"nuisance": {"axis": "lr", "select": "test/loss"}},
         "nuisance select 'test/loss' is not on the validation split: select on a val/ metric"),
        ({"nuisance": {"axis": "lr"}}, "nuisance needs select"),
        ({"nuisance": {"axis": "lr", "select": "val/loss", "mode": "lowest"}},
         "nuisance mode='lowest'; valid: min, max"),
        ({"nuisance": {"axis": "lr", "select": "val/loss", "mode": "max"}},
         "mode='max' contradicts 'val/loss', where lower is better"),
        ({"nuisance": {"axis": "lr", "select": "val/widgets"}}, "give mode: min or mode: max"),
        ({"nuisance": {"axis": "lr", "select": {"name": "val/loss", "diverged": "worst"}}},
         "select takes \\{name, at\\}"),
        ({"nuisance": {"axis": "lr", "select": "val/loss", "by": 1}}, "unknown nuisance keys \\['by'\\]"),
        ({"nuisance": ["lr"]}, "nuisance must be a mapping"),
        ({"axes": {"variant": NUISANCE["axes"]["variant"], "lr": {"0.1": ["optimizer.lr=0.1"]}}},
         "nuisance axis 'lr' has one value; a grid needs two or more"),
        ({"metric": "val/acc"}, "judges 'val/acc', on the validation split, where the nuisance 'lr' is selected"),
        ({"assert": [{"less": ["variant=a,lr=0.1", "b"]}]},
         "group 'variant=a,lr=0.1' names the nuisance axis 'lr'"),
        ({"nuisance": None}, "group 'a' leaves axis 'lr' open \\(3 runs per seed\\): name it \\(variant=a,lr=0.01\\)"),
        ({"assert": [{"equivalent": ["a", "b"], "margin": 0}]}, "margin must be a number > 0 \\(in the metric's units\\), got 0"),
        ({"assert": [{"equivalent": ["a", "b"], "margin": -0.01}]}, "margin must be a number > 0 .*got -0.01"),
        ({"assert": [{"equivalent": ["a", "b"], "margin": "1%"}]}, "margin must be a number > 0 .*got '1%'"),
        ({"assert": [{"equivalent": ["a", "b"]}]}, "equivalent needs a margin \\(equivalent: \\[a, b\\] with margin"),
        ({"assert": [{"equivalent": ["a", "b", "a"], "margin": 0.1}]}, "equivalent takes exactly two groups"),
        ({"assert": [{"equivalent": ["a", "b"], "margin": 0.1}], "metric": {"name": "test/loss", "diverged": "worst"}},
         "diverged runs cannot rank worst there"),
    ],
    ids=["unknown-axis", "no-axis", "select-on-test", "no-select", "bad-mode", "contradicting-mode",
         "unknown-direction", "select-diverged", "unknown-key", "not-a-mapping", "one-value-grid",
         "judged-on-val", "group-names-nuisance", "axis-left-open", "margin-0", "margin-negative",
         "margin-text", "margin-missing", "three-groups", "equivalent-diverged-worst"],
)  # fmt: skip
def test_malformed_nuisance_and_equivalence(tmp_path: Path, change: dict, message: str) -> None:
    with pytest.raises(C.ClaimError, match=message) as err:
        C.load_claim(claim_file(tmp_path, **{**NUISANCE, **change}))
    assert str(err.value).startswith("T1.yaml: ")


def test_a_validation_target_is_refused_where_the_nuisance_is_selected(
    tmp_path: Path,
    make_spec,  # noqa: ANN001
) -> None:
    claim = C.load_claim(claim_file(tmp_path, **{**NUISANCE, "metric": "target/epochs"}))
    spec = make_spec(["dataset=moons", "diagnostics.target={metric: val/acc, value: 0.9}"])
    keys = [C.job_key(claim, labels, seed) for labels, seed, _ in claim.jobs()]
    facts = [check_run(spec).summary()] * len(keys)
    with pytest.raises(C.ClaimError, match="judges 'target/epochs', epochs to a target on val/acc"):
        C.check_metrics([claim], keys, [spec] * len(keys), facts)


# -- end to end: tiny sweeps through lossbench-claims --------------------------------------------

TINY = [
    "dataset=moons",
    "dataset.source.n_samples=200",
    "trainer.max_epochs=3",
    "scheduler=constant",
]
SEEDS = [0, 1, 2]
GRID = ["0.001", "0.01", "0.1"]
FAIR_CLAIMS = {
    "EQ1": {  # one optimizer written two ways: the same resolved config, trained once
        "claim": "optimizer=momentum is SGD with momentum 0.9",
        "base": [*TINY, "optimizer.lr=0.05"], "seeds": SEEDS, "metric": "test/loss",
        "axes": {"written": {"preset": ["optimizer=momentum"],
                             "by_hand": ["optimizer=sgd", "optimizer.momentum=0.9"]}},
        "assert": [{"equivalent": ["preset", "by_hand"], "margin": 0.01}],
    },
    "EQ2": {  # Huber with delta 1 is smooth L1 with beta 1: two losses, trained apart
        "claim": "huber (delta 1) and smooth_l1 (beta 1) train the same model",
        "base": ["dataset=regression", "dataset.source.n_samples=200", "trainer.max_epochs=3"],
        "seeds": SEEDS, "metric": "test/rmse",
        "axes": {"loss": {"huber": ["loss=huber"], "smooth_l1": ["loss=smooth_l1"]}},
        "assert": [{"equivalent": ["huber", "smooth_l1"], "margin": 0.01}],
    },
    "NE": {  # clearly different after 3 epochs at lr 0.01
        "claim": "SGD and Adam reach the same test loss",
        "base": TINY, "seeds": SEEDS, "metric": "test/loss",
        "axes": {"optimizer": {"sgd": ["optimizer=sgd", "optimizer.lr=0.01"],
                               "adam": ["optimizer=adam", "optimizer.lr=0.01"]}},
        "assert": [{"equivalent": ["sgd", "adam"], "margin": 0.01}],
    },
    "NU": {  # each optimizer at its best lr of three (shares NE's lr=0.01 runs)
        "claim": "Adam reaches a lower test loss than SGD, each at its best lr",
        "base": TINY, "seeds": SEEDS, "metric": "test/loss",
        "axes": {"optimizer": {"sgd": ["optimizer=sgd"], "adam": ["optimizer=adam"]},
                 "lr": {lr: [f"optimizer.lr={lr}"] for lr in GRID}},
        "nuisance": {"axis": "lr", "select": "val/loss"},
        "assert": [{"less": ["adam", "sgd"]}],
    },
}  # fmt: skip


def store_means(uri: str, experiment: str, optimizer: str, lr: str) -> dict[str, float]:
    """Mean val/loss and test/loss over the seeds of one optimizer and lr, read from MLflow."""
    from mlflow import MlflowClient

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    found = [
        r.data.metrics
        for r in client.search_runs([exp.experiment_id], max_results=1000)
        if r.data.tags.get("lossbench.choice.optimizer") == optimizer
        and r.data.params.get("optimizer.lr") == lr
        and r.data.params.get("dataset.name") == "moons"
        and r.data.params.get("seed") in {str(s) for s in SEEDS}
    ]
    assert len(found) == len(SEEDS)
    return {m: float(np.mean([f[m] for f in found])) for m in ("val/loss", "test/loss")}


@pytest.mark.slow
def test_equivalence_and_best_lr_end_to_end(
    tmp_path: Path,
    store_uri: str,
    make_spec,  # noqa: ANN001
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from lossbench.identity import config_hash

    written = [make_spec([*TINY, "optimizer.lr=0.05", *o, "seed=0"]).cfg for o in
               (["optimizer=momentum"], ["optimizer=sgd", "optimizer.momentum=0.9"])]  # fmt: skip
    assert written[0] == written[1] and config_hash(written[0]) == config_hash(written[1])
    folder = claims_dir(
        tmp_path, {f"{i}.yaml": yaml.safe_dump({"id": i, **c}) for i, c in FAIR_CLAIMS.items()}
    )
    monkeypatch.chdir(tmp_path)
    rc = C.main(["--claims-dir", str(folder), "--tracking-uri", store_uri, "--experiment", "claims-fair",
                 "--out", str(tmp_path / "reports"), "--json", str(tmp_path / "v.json")])  # fmt: skip
    assert rc == 0
    verdicts = {v["id"]: v for v in json.loads((tmp_path / "v.json").read_text())}
    assert verdicts["EQ1"]["verdict"] == C.REPRODUCED
    assert verdicts["EQ2"]["verdict"] == C.REPRODUCED
    assert verdicts["NE"]["verdict"] == C.NOT_REPRODUCED
    [nu] = verdicts["NU"]["assertions"]
    for optimizer in ("sgd", "adam"):  # chosen on validation, judged on test, as the store says
        means = {lr: store_means(store_uri, "claims-fair", optimizer, lr) for lr in GRID}
        best = min(GRID, key=lambda lr: means[lr]["val/loss"])
        assert nu["chosen"][optimizer] == {"lr": best}
        assert nu["selection"][optimizer] == pytest.approx(
            {lr: m["val/loss"] for lr, m in means.items()}
        )
        assert nu["groups"][optimizer]["mean"] == pytest.approx(means[best]["test/loss"])
        at_edge = best != "0.01"
        assert (
            any(n.startswith(f"{optimizer}: lr={best} is the grid's") for n in nu["notes"])
            == at_edge
        )
    report = (tmp_path / "reports" / "claims.md").read_text()
    assert f"adam at lr={nu['chosen']['adam']['lr']}: " in report
    assert "Nuisance axis `lr`: each group at the value with the lowest mean val/loss" in report
    assert verdicts["NE"]["p_value"] < 0.05  # the test that a difference is beyond the margin


def test_judging_is_light(tmp_path: Path) -> None:
    """Selection, equivalence and the verdict table import neither torch nor Lightning (only
    the sweep, which trains, does)."""
    path = claim_file(
        tmp_path, **{**NUISANCE, "assert": [{"equivalent": ["a", "b"], "margin": 0.1}]}
    )
    table = SELECTIONS["best-val-mean"][0]
    code = f"""
import sys
sys.path.insert(0, {str(Path(__file__).parent)!r})
from lossbench import claims as C
from lossbench.claims import render
from test_claims import nuisance_runs
claim = C.load_claim(__import__("pathlib").Path({str(path)!r}))
verdict = C.evaluate(claim, nuisance_runs(claim, {table!r}))
render.verdict_rows([verdict]), C.verdicts_json([verdict])
print(verdict.evidence[0].chosen)
print("HEAVY", [m for m in ("pytorch_lightning", "lightning", "torch") if m in sys.modules])
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "{'a': '0.1', 'b': '0.01'}" in done.stdout and "HEAVY []" in done.stdout


def test_the_readme_claim_examples_load(tmp_path: Path) -> None:
    """The complete examples of the README's claim reference are valid claim files."""
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    blocks = [b.split("```", 1)[0] for b in readme.split("```yaml\n")[1:]]
    examples = [b for b in blocks if b.startswith("id: U")]
    loaded = {}
    for text in examples:
        (tmp_path / "U.yaml").write_text(text)
        claim = C.load_claim(tmp_path / "U.yaml")
        loaded[claim.id] = claim
    assert sorted(loaded) == ["U1", "U2", "U3", "U4"]
    assert loaded["U2"].nuisance == C.Nuisance("lr", C.Selector("val/loss"), higher=False)
    assert [a.kind for a in loaded["U3"].assertions] == ["equivalent"]
    assert [a.kind for a in loaded["U4"].assertions] == ["beats", "ranks_first"]


def test_the_report_sets_each_fixed_claim_beside_its_fair_variant(tmp_path: Path) -> None:
    """reports/claims.md says where a claim at a fixed lr and its -fair variant disagree."""
    (tmp_path / "fixed").mkdir(), (tmp_path / "fair").mkdir()
    fixed = C.load_claim(claim_file(tmp_path / "fixed"))
    a, b = [0.10, 0.11, 0.12, 0.10, 0.11], [0.30, 0.31, 0.29, 0.30, 0.32]
    fixed_verdict = C.evaluate(fixed, runs_for(fixed, {"a": a, "b": b}))
    fair = C.load_claim(claim_file(tmp_path / "fair", **{**NUISANCE, "id": "T1-fair"}))
    table = {(g, lr): (0.5, 0.5, 0) for g in "ab" for lr in ("0.01", "0.1", "1")}
    table[("a", "0.1")], table[("b", "1")] = (0.2, 0.6, 0), (0.2, 0.1, 0)  # b wins at its best
    fair_verdict = C.evaluate(fair, nuisance_runs(fair, table))
    assert (fixed_verdict.verdict, fair_verdict.verdict) == (C.REPRODUCED, C.NOT_REPRODUCED)
    other = C.evaluate(fixed, runs_for(fixed, {"a": a, "b": b}))  # no fair variant: not listed
    other.claim = C.load_claim(claim_file(tmp_path, id="T2"))
    text = C.write_report(
        [fixed_verdict, fair_verdict, other], tmp_path / "reports", 1.0, "claims", "sqlite://"
    ).read_text()
    section = text.split("## Fixed learning rate vs each at its best learning rate")[1]
    section = section.split("\n## ")[0]
    assert "They disagree on 1 of 1 assertions: T1 #1." in section
    [row] = [line for line in section.splitlines() if line.startswith("| T1 / T1-fair #1")]
    assert "REPRODUCED" in row and "NOT REPRODUCED" in row and "**disagree**" in row
    assert "a at lr=0.1" in row and "b at lr=1" in row and "T2" not in section


# -- across problems: beats, ranks_first -----------------------------------------------------

PROBLEMS = [f"d{i}" for i in range(1, 7)]
ACROSS = {
    "axes": {
        "dataset": {d: [f"dataset.source.n_samples={100 + i}"] for i, d in enumerate(PROBLEMS)},
        "variant": {"a": ["optimizer=adam"], "b": ["optimizer=sgd"], "c": ["optimizer=momentum"]},
    },
    "metric": "train/final_loss",
}
SPREAD = [0.0, 0.01, -0.01, 0.005, -0.002]  # per seed: paired differences stay clear


def across_runs(claim: C.Claim, means: dict[tuple[str, str], float], failed: tuple = ()) -> dict:
    """Each (variant, problem)'s five seeds: its mean plus SPREAD (a shared seed effect) plus a
    little noise of its own, so paired tests see clear differences but not zero spread."""
    data = {}
    for labels, seed, _ in claim.jobs():
        key = (labels["variant"], labels["dataset"])
        i = claim.seeds.index(seed)
        value = means[key] + SPREAD[i] + 0.001 * ((i * 7 + ord(key[0])) % 3)
        outcome = "failed" if key in failed else "finished"
        data[C.job_key(claim, labels, seed)] = C.RunData(
            outcome, {"train/final_loss": value}, {}, 10, f"{key}{seed}"
        )
    return data


def across_claim(tmp_path: Path, assertion: dict) -> C.Claim:
    return C.load_claim(claim_file(tmp_path, **{**ACROSS, "assert": [assertion]}))


def ranked(order: str, problems: list[str] = PROBLEMS) -> dict[tuple[str, str], float]:
    """Loss means where the variants rank in ``order`` (best first) on the given problems."""
    return {(v, d): 0.1 * (order.index(v) + 1) for v in "abc" for d in problems}


def test_beats_on_every_problem(tmp_path: Path) -> None:
    claim = across_claim(tmp_path, {"beats": ["a", "b"], "across": "dataset"})
    verdict = C.evaluate(claim, across_runs(claim, ranked("abc")))
    e = verdict.evidence[0]
    assert verdict.verdict == C.REPRODUCED and e.n == 6 and e.effect == 1.0
    # k = n: the partial-conjunction p is the largest of the six paired t-tests' p
    runs = across_runs(claim, ranked("abc"))
    ps = []
    for d in PROBLEMS:
        a = [
            runs[C.job_key(claim, {"dataset": d, "variant": "a"}, s)].metrics["train/final_loss"]
            for s in claim.seeds
        ]
        b = [
            runs[C.job_key(claim, {"dataset": d, "variant": "b"}, s)].metrics["train/final_loss"]
            for s in claim.seeds
        ]
        ps.append(st.ttest_rel(a, b).pvalue)
    assert e.p_value == pytest.approx(max(ps))
    assert set(e.groups) == {f"{v} on {d}" for v in "ab" for d in PROBLEMS}
    assert "a vs b: 6 better, 0 undecided, 0 not" in e.why
    assert "better than b on every one of the dataset problems" in C.describe(e.assertion)


def test_beats_on_at_least_k_of_n(tmp_path: Path) -> None:
    """a is better on d1-d5 and worse on d6: 5 of 6 holds, 6 of 6 does not."""
    means = {**ranked("abc", PROBLEMS[:5]), **ranked("bac", PROBLEMS[5:])}
    five = across_claim(tmp_path, {"beats": ["a", "b"], "across": "dataset", "at_least": 5})
    assert C.evaluate(five, across_runs(five, means)).verdict == C.REPRODUCED
    six = across_claim(tmp_path, {"beats": ["a", "b"], "across": "dataset"})
    verdict = C.evaluate(six, across_runs(six, means))
    assert verdict.verdict == C.NOT_REPRODUCED  # b significantly better on d6: 6 is out of reach
    assert "fails on more than 0 of 6" in verdict.evidence[0].why
    # b better on two problems: 5 of 6 is out of reach too
    two = {**ranked("abc", PROBLEMS[:4]), **ranked("bac", PROBLEMS[4:])}
    assert C.evaluate(five, across_runs(five, two)).verdict == C.NOT_REPRODUCED
    # a and b the same on d6 (only noise): 6 of 6 undecided, not refuted
    same = {**ranked("abc", PROBLEMS[:5]), **{(v, "d6"): 0.2 for v in "abc"}}
    assert C.evaluate(six, across_runs(six, same)).verdict == C.INCONCLUSIVE


def test_ranks_first_across_problems(tmp_path: Path) -> None:
    """Two groups: Wilcoxon over six problems, a better on all: exact p = 2/2^6."""
    two = across_claim(tmp_path, {"ranks_first": ["a", "b"], "across": "dataset"})
    verdict = C.evaluate(two, across_runs(two, ranked("abc")))
    assert verdict.verdict == C.REPRODUCED
    assert (
        verdict.evidence[0].p_value == pytest.approx(2 / 2**6) and verdict.evidence[0].effect == 1.0
    )
    # three groups, always ranked a, b, c: Friedman chi2 = 12, p = exp(-6); Nemenyi finds a
    # better than c (mean ranks 1 vs 3) but not than b (1 vs 2) with six problems
    three = across_claim(tmp_path, {"ranks_first": ["a", "b", "c"], "across": "dataset"})
    e = C.evaluate(three, across_runs(three, ranked("abc"))).evidence[0]
    assert e.verdict == C.INCONCLUSIVE and f"Friedman p = {math.exp(-6):.2g}" in e.why
    q = 1 / math.sqrt(3 * 4 / (6 * 6))  # mean ranks 1 apart
    assert e.p_value == pytest.approx(st.studentized_range.sf(q * math.sqrt(2), 3, np.inf))
    # c claimed first but always last: a ranks significantly better
    last = across_claim(tmp_path, {"ranks_first": ["c", "a", "b"], "across": "dataset"})
    e = C.evaluate(last, across_runs(last, ranked("abc"))).evidence[0]
    assert e.verdict == C.NOT_REPRODUCED and "a significantly better than c" in e.why


def test_ranks_use_complete_problems_only(tmp_path: Path) -> None:
    claim = across_claim(tmp_path, {"ranks_first": ["a", "b"], "across": "dataset"})
    verdict = C.evaluate(claim, across_runs(claim, ranked("abc"), failed=(("b", "d6"),)))
    e = verdict.evidence[0]
    assert e.n == 5 and "1 problem(s) left out, a group without runs: d6" in e.why
    assert verdict.verdict == C.INCONCLUSIVE  # five problems: Wilcoxon's smallest p is 1/16


@pytest.mark.parametrize(
    ("assertion", "message"),
    [
        ({"beats": ["a", "b"]}, "beats needs across: <the claim's axis of problems>"),
        ({"beats": ["a", "b"], "across": "task"}, "across='task' is not an axis of the claim; axes: dataset, variant"),
        ({"beats": ["a", "b", "c"], "across": "dataset"}, "beats takes two groups"),
        ({"beats": ["a", "b"], "across": "dataset", "at_least": 7}, "at_least=7 but 'dataset' has 6 problems"),
        ({"beats": ["a", "b"], "across": "dataset", "at_least": 0}, "at_least must be a whole number of problems ≥ 1"),
        ({"beats": ["variant=a,dataset=d1", "b"], "across": "dataset"}, "names the axis of problems 'dataset'"),
        ({"ranks_first": ["a", "b"], "across": "dataset", "metric": "grad_norm/layer1"}, "give mode: min or mode: max"),
        ({"ranks_first": ["a", "b"], "across": "dataset", "mode": "max"}, "mode='max' contradicts 'train/final_loss'"),
        ({"ranks_first": ["a", "b"], "across": "dataset", "at_least": 2}, "at_least belongs to beats"),
        ({"less": ["a", "b"]}, "leaves axis 'dataset' open .* or its axis of problems"),
    ],
)  # fmt: skip
def test_malformed_across_assertions(tmp_path: Path, assertion: dict, message: str) -> None:
    with pytest.raises(C.ClaimError, match=message):
        across_claim(tmp_path, assertion)


# -- times to target, directions, sparse histories, effects, report files (issues 23, 26, 29) ---


def target_runs(claim: C.Claim, epochs: dict[str, list[float]], max_epochs: int = 20) -> dict:
    """Runs whose diagnostics.target was first reached at these epochs (NaN: never)."""
    data = {}
    for labels, seed, _ in claim.jobs():
        value = epochs[labels["variant"]][claim.seeds.index(seed)]
        metrics = {"target/epochs": value, "time/epoch_seconds": 0.5}
        data[C.job_key(claim, labels, seed)] = C.RunData("finished", metrics, {}, max_epochs)
    return data


def test_epochs_to_target_count_the_runs_that_never_reach_it(tmp_path: Path) -> None:
    """a reaches the target fast in 2 seeds of 8 and never in 6; b a little later in all 8.
    The mean over the runs that reached it would favour a; Kaplan–Meier and the log-rank test
    (SciPy's, on the censored data) find b faster."""
    nan = math.nan
    claim = C.load_claim(claim_file(tmp_path, metric="target/epochs", seeds=list(range(8)),
                                    **{"assert": [{"less": ["b", "a"]}]}))  # fmt: skip
    epochs = {"a": [3, 3, nan, nan, nan, nan, nan, nan], "b": [6, 7, 7, 8, 8, 6, 7, 8]}
    verdict = C.evaluate(claim, target_runs(claim, epochs))
    evidence = verdict.evidence[0]
    a, b = evidence.times["a"], evidence.times["b"]
    assert (a.median, a.reached, a.n, b.median, b.reached) == (math.inf, 2, 8, 7, 8)
    expected = st.logrank(st.CensoredData(uncensored=[6, 7, 7, 8, 8, 6, 7, 8]),
                          st.CensoredData(uncensored=[3, 3], right=[20] * 6))  # fmt: skip
    assert evidence.verdict == C.REPRODUCED and expected.statistic > 0  # b: more events
    assert evidence.p_value == pytest.approx(expected.pvalue)
    assert evidence.effect == -math.inf and evidence.effect_kind == "Δ median, epochs"
    [row] = render.verdict_rows([verdict])
    assert row[5] == "b: median 7 [6, 8], 8/8 reached; a: median > 20 [3, ∞], 2/8 reached"
    assert row[6] == "-inf (Δ median, epochs)"
    seconds = C.load_claim(claim_file(tmp_path, metric="target/seconds", seeds=list(range(8)),
                                      **{"assert": [{"less": ["b", "a"]}]}))  # fmt: skip
    timed = C.evaluate(seconds, target_runs(seconds, epochs)).evidence[0]
    assert timed.times["b"].median == 3.5 and timed.effect_kind == "Δ median, seconds"
    assert timed.p_value == pytest.approx(expected.pvalue)  # the same runs, on another scale


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"metric": "target/epochs", "assert": [{"within": {"group": "a", "range": [1, 5]}}]},
         "within cannot judge 'target/epochs': runs that never reach the target count as censored"),
        ({"metric": {"name": "target/epochs", "at": "min"}}, "one number per run: no at, ratio"),
        ({"metric": {"name": "grad_norm/layer0", "at": "best"}},
         "at: best on 'grad_norm/layer0': it has no better end; read at: min or at: max"),
    ],
)  # fmt: skip
def test_times_and_directions_refused_where_they_cannot_be_read(
    tmp_path: Path, change: dict, message: str
) -> None:
    with pytest.raises(C.ClaimError, match=message):
        C.load_claim(claim_file(tmp_path, **change))


AUROC = "+metrics.auroc={_target_: lossbench.problem.metrics.ece, task: classification, every_epoch: true, higher_is_better: true}"


def test_a_user_metric_where_higher_is_better_is_read_at_its_best_and_selected_on(
    tmp_path: Path,
    make_spec,  # noqa: ANN001
) -> None:
    """Issue 23: the direction a metrics: entry declares (recorded as a param) decides at:
    best and the nuisance selection; the claim leaves it to the runs' config, checked before
    training, where a contradicting mode is refused."""
    fields = {**NUISANCE, "base": ["dataset=moons", AUROC],
              "nuisance": {"axis": "lr", "select": "val/auroc"}}  # fmt: skip
    claim = C.load_claim(claim_file(tmp_path, **fields))
    assert claim.nuisance is not None and claim.nuisance.higher is None  # its runs say
    at_best = C.load_claim(claim_file(tmp_path / "..", **{**fields, "nuisance": None,
        "metric": {"name": "val/auroc", "at": "best"}, "assert": [{"less": ["variant=a,lr=1", "variant=b,lr=1"]}]}))  # fmt: skip
    auroc = {"0.01": 0.6, "0.1": 0.9, "1": 0.7}  # lr -> final val/auroc; 0.1 is the best
    runs = {}
    for labels, seed, _ in claim.jobs():
        value = auroc[labels["lr"]] + (0.1 if labels["variant"] == "a" else 0) + seed / 1000
        metrics = {"val/auroc": value, "test/loss": 0.5 - value / 10 + seed / 1000}
        runs[C.job_key(claim, labels, seed)] = C.RunData(
            "finished", metrics, {"val/auroc": [0.1, value + 0.05, value]}, 3,
            directions={"auroc": True},
        )  # fmt: skip
    evidence = C.evaluate(claim, runs).evidence[0]
    assert evidence.chosen == {"a": "0.1", "b": "0.1"}  # the highest, as declared
    best = C.evaluate(at_best, runs).evidence[0]
    assert best.groups["variant=a,lr=1"].mean == pytest.approx(0.7 + 0.1 + 0.05 + 0.002)
    # an entry that does not declare it: lower is better (recorded params: no such key)
    default = {k: C.RunData(r.outcome, r.metrics, r.histories, 3, directions={"auroc": False})
               for k, r in runs.items()}  # fmt: skip
    assert C.evaluate(claim, default).evidence[0].chosen == {"a": "0.01", "b": "0.01"}
    unknown = {k: C.RunData(r.outcome, r.metrics, r.histories, 3) for k, r in runs.items()}
    with pytest.raises(C.ClaimError, match="'val/auroc': nothing says whether higher or lower"):
        C.evaluate(claim, unknown)  # no metrics: entry of that name: no direction at all

    spec = make_spec(["dataset=moons", AUROC])
    keys = [C.job_key(claim, labels, seed) for labels, seed, _ in claim.jobs()]
    facts = [check_run(spec).summary()] * len(keys)
    C.check_metrics([claim], keys, [spec] * len(keys), facts)
    assert claim.nuisance.higher is True  # set from the config before anything trains
    contradicting = C.load_claim(claim_file(tmp_path, **{**fields, "nuisance": {
        "axis": "lr", "select": "val/auroc", "mode": "min"}}))  # fmt: skip
    with pytest.raises(C.ClaimError, match="mode='min' contradicts 'val/auroc', where higher"):
        C.check_metrics([contradicting], keys, [spec] * len(keys), facts)


def test_sparse_histories_are_read_by_their_logged_epochs(tmp_path: Path) -> None:
    """Issue 29: at: first reads the first logged epoch and says which; min/max/best read the
    logged epochs and say that every epoch's is a bound."""
    from lossbench.tracking.records import History

    def runs(claim: C.Claim, start: int) -> dict:
        epochs = (start, start + 5, start + 10)
        return {C.job_key(claim, labels, seed): C.RunData("finished", {}, {"grad_norm/layer0": History(
                    epochs, (1.0 + seed / 10, 0.5, 0.8 if labels["variant"] == "a" else 0.9))}, 15)
                for labels, seed, _ in claim.jobs()}  # fmt: skip

    first = C.load_claim(claim_file(tmp_path, metric={"name": "grad_norm/layer0", "at": "first"}))
    assert C.evaluate(first, runs(first, 1)).evidence[0].notes == []  # epoch 1 logged
    shifted = C.evaluate(first, runs(first, 2)).evidence[0]
    assert shifted.groups["a"].mean == pytest.approx(1.2)  # the first logged value
    assert "the first logged epoch (2) is read, not epoch 1" in shifted.notes[0]
    low = C.load_claim(claim_file(tmp_path, metric={"name": "grad_norm/layer0", "at": "min"}))
    evidence = C.evaluate(low, runs(low, 1)).evidence[0]
    assert evidence.groups["b"].mean == pytest.approx(0.5)
    assert "10 of 10 runs logged it at some epochs only" in evidence.notes[0]
    assert "every epoch's is at most it" in evidence.notes[0]


def test_each_effect_says_what_it_is(tmp_path: Path) -> None:
    """Issue 26: "effect" was a standardized size in one row and a difference of means in
    another, and nothing said which."""
    a, b = [0.10, 0.11, 0.12, 0.10, 0.11], [0.30, 0.31, 0.29, 0.30, 0.32]
    paired = C.evaluate(C.load_claim(claim_file(tmp_path)), runs_for(
        C.load_claim(claim_file(tmp_path)), {"a": a, "b": b}))  # fmt: skip
    equivalence = C.load_claim(claim_file(tmp_path, **EQUIVALENT))
    same = C.evaluate(equivalence, runs_for(equivalence, {"a": a, "b": a}))
    rows = render.verdict_rows([paired, same])
    assert rows[0][6].endswith("(Cohen's d_z)") and rows[1][6].endswith(
        "(Δ mean, train/final_loss)"
    )
    data = C.verdicts_json([paired, same])
    assert [d["assertions"][0]["effect_kind"] for d in data] == [
        "Cohen's d_z",
        "Δ mean, train/final_loss",
    ]


def test_the_claims_report_accumulates_by_claim_id(tmp_path: Path) -> None:
    """Issue 26: each run replaced reports/claims.md; now each claim has its files and the
    index holds every claim judged there, a claim judged again replacing its own."""
    a, b = [0.10, 0.11, 0.12, 0.10, 0.11], [0.30, 0.31, 0.29, 0.30, 0.32]
    out = tmp_path / "reports"
    first = C.load_claim(claim_file(tmp_path))
    C.write_report(
        [C.evaluate(first, runs_for(first, {"a": a, "b": b}))], out, 1.0, "claims", "sqlite://"
    )
    (tmp_path / "other").mkdir()
    second = C.load_claim(claim_file(tmp_path / "other", id="T2"))
    index = C.write_report([C.evaluate(second, runs_for(second, {"a": b, "b": a}))], out, 1.0,
                           "claims", "sqlite://").read_text()  # fmt: skip
    assert "| T1 | a is below b | **REPRODUCED** |" in index
    assert "| T2 | a is below b | **NOT REPRODUCED** |" in index
    assert "## T1: a is below b" in index and "## T2: a is below b" in index
    assert "![T1](claims/T1.png)" in index and (out / "claims" / "T1.png").exists()
    assert "![T1](T1.png)" in (out / "claims" / "T1.md").read_text()
    assert json.loads((out / "claims" / "T2.json").read_text())["verdict"] == C.NOT_REPRODUCED
    again = C.write_report([C.evaluate(first, runs_for(first, {"a": b, "b": a}))], out, 1.0,
                           "claims", "sqlite://").read_text()  # fmt: skip
    assert "| T1 | a is below b | **NOT REPRODUCED** |" in again and again.count("## T1:") == 1
    assert "2 claims judged so far (this run: 1" in again


def test_a_missing_claim_id_suggests_claims_dir(
    tmp_path: Path, store_uri: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    """Issue 26: `lossbench-claims U1` for a file outside conf/claims/ said only that there is
    no such claim."""
    monkeypatch.chdir(tmp_path)
    argv = ["U1", "--tracking-uri", store_uri, "--out", str(tmp_path / "reports")]
    assert C.main(argv) == 2
    err = capsys.readouterr().err
    assert (
        "no claim ['U1'] in" in err
        and "for claim files in another directory: --claims-dir DIR" in err
    )
    folder = claims_dir(tmp_path, {"V1.yaml": yaml.safe_dump(WORKED)})
    assert C.main([*argv, "--claims-dir", str(folder)]) == 2
    assert "--claims-dir DIR" not in capsys.readouterr().err  # given: no hint


def test_a_claim_with_early_stopping_runs(
    tmp_path: Path, store_uri: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 27: claims take early_stopping=... in base like any option (a tiny one)."""
    claim = {"id": "ES", "claim": "adam reaches a lower test loss than sgd, with early stopping",
             "base": [*TINY, "trainer.max_epochs=4", "early_stopping=val_loss", "early_stopping.patience=0",
                      "early_stopping.min_delta=10"],  # no improvement is that large: stop at epoch 2
             "axes": {"optimizer": {"sgd": ["optimizer=sgd", "optimizer.lr=0.01"], "adam": ["optimizer=adam"]}},
             "seeds": [0, 1], "metric": "test/loss", "assert": [{"less": ["adam", "sgd"]}]}  # fmt: skip
    folder = claims_dir(tmp_path, {"ES.yaml": yaml.safe_dump(claim)})
    monkeypatch.chdir(tmp_path)
    rc = C.main(["--claims-dir", str(folder), "--tracking-uri", store_uri, "--experiment", "claims-es",
                 "--out", str(tmp_path / "reports"), "--json", str(tmp_path / "v.json"), "--n-jobs", "1"])  # fmt: skip
    assert rc == 0
    [verdict] = json.loads((tmp_path / "v.json").read_text())
    assert verdict["id"] == "ES" and verdict["assertions"][0]["n"] == 2
    from mlflow import MlflowClient

    client = MlflowClient(store_uri)
    runs = client.search_runs([client.get_experiment_by_name("claims-es").experiment_id],
                              "tags.`lossbench.role` = 'run'")  # fmt: skip
    assert len(runs) == 4 and {r.data.params["early_stopping.patience"] for r in runs} == {"0"}
    assert {r.data.tags.get("lossbench.stopped_epoch") for r in runs} == {"1"}  # 0-based
    from lossbench import report

    built = report.build_report(store_uri, "claims-es")  # and the report says so
    header, rows = report.display_table(built)
    assert [r[header.index("stopped early (mean epoch)")] for r in rows] == ["2.0 (2/2)"] * 2
