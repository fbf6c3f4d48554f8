"""Comparing recipes across problems (datasets, models): each problem is a block, and recipes
are compared within each block, never across two.

Pure NumPy/SciPy/pandas on a table of scores (one row per problem, one column per recipe), so
that the report and the claims judge the same way. Methods, after Demšar (JMLR 7, 2006):

- ranks within each problem, 1 = best, ties get their mean rank; a recipe's mean rank over the
  problems;
- the Friedman test that all recipes rank alike (SciPy's ``friedmanchisquare``, with its tie
  correction; three recipes or more), and the Nemenyi post-hoc test of every pair
  (scikit-posthocs' ``posthoc_nemenyi_friedman``) with its critical difference of mean ranks;
- two recipes, or each recipe against a baseline: Wilcoxon's signed-rank test over the
  problems (SciPy's ``wilcoxon``, zero differences split between the signs as Demšar does),
  Holm-adjusted for the number of comparisons;
- wins, ties and losses against a baseline, from per-problem tests: a tie is no significant
  difference on that problem;
- a performance profile (Dolan and Moré, 2002): the share of problems on which a recipe's
  time to target is within τ times the best recipe's on that problem.

Only complete blocks are used: a problem where some recipe has no value is dropped (and
counted) by :func:`complete_blocks`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from lossbench.analysis import stats

if TYPE_CHECKING:
    import pandas as pd

WIN, TIE, LOSS = "win", "tie", "loss"


def complete_blocks(scores: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, list[str]]]:
    """The problems (rows) where every recipe (column) has a finite score, and for each
    dropped problem the recipes it lacks."""
    finite = scores.apply(lambda column: column.map(lambda v: v is not None and math.isfinite(v)))
    keep = finite.all(axis=1)
    dropped = {
        str(problem): [str(r) for r in scores.columns[~finite.loc[problem]]]
        for problem in scores.index[~keep]
    }
    return scores.loc[keep].astype(float), dropped


def rank_table(scores: pd.DataFrame, higher: bool) -> pd.DataFrame:
    """Each problem's recipes ranked, 1 = best; ties share their mean rank."""
    from scipy import stats as st

    signed = -scores.to_numpy(float) if higher else scores.to_numpy(float)
    ranks = st.rankdata(signed, axis=1, method="average")
    return type(scores)(ranks, index=scores.index, columns=scores.columns)


def mean_ranks(scores: pd.DataFrame, higher: bool) -> pd.Series:
    """Each recipe's mean rank over the problems, best (lowest) first."""
    return rank_table(scores, higher).mean(axis=0).sort_values(kind="stable")


@dataclass(frozen=True)
class Omnibus:
    """A test that all recipes perform alike across the problems."""

    test: str  # "Friedman" (three recipes or more), "Wilcoxon signed-rank" (two), "" (none)
    statistic: float
    p_value: float
    n_problems: int
    n_recipes: int


def omnibus(scores: pd.DataFrame) -> Omnibus:
    """Friedman's test for three recipes or more, Wilcoxon's signed-rank test for two; NaN
    where there are fewer than two problems or recipes."""
    from scipy import stats as st

    n, k = scores.shape
    if n < 2 or k < 2:
        return Omnibus("", math.nan, math.nan, n, k)
    if k == 2:
        statistic, p = wilcoxon(scores.iloc[:, 0].tolist(), scores.iloc[:, 1].tolist())
        return Omnibus("Wilcoxon signed-rank", statistic, p, n, k)
    values = scores.to_numpy(float)
    if np.all(values == values[:, :1]):  # every problem a tie: nothing ranks apart
        return Omnibus("Friedman", 0.0, 1.0, n, k)
    result = st.friedmanchisquare(*values.T)
    return Omnibus("Friedman", float(result.statistic), float(result.pvalue), n, k)


def wilcoxon(a: Sequence[float], b: Sequence[float]) -> tuple[float, float]:
    """Wilcoxon's signed-rank test of paired values (statistic: the smaller rank sum, zero
    differences split between the two, as Demšar 2006 does); p two-sided; (NaN, NaN) with
    fewer than two pairs, p = 1 when every pair is equal."""
    from scipy import stats as st

    diff = np.asarray(a, float) - np.asarray(b, float)
    if len(diff) < 2:
        return math.nan, math.nan
    if np.all(diff == 0):
        return 0.0, 1.0
    result = st.wilcoxon(a, b, zero_method="zsplit")
    return float(result.statistic), float(result.pvalue)


def nemenyi(scores: pd.DataFrame) -> pd.DataFrame:
    """Nemenyi's post-hoc test of every pair of recipes (scikit-posthocs): p-values, recipe by
    recipe (1 on the diagonal)."""
    import scikit_posthocs as sp

    table = sp.posthoc_nemenyi_friedman(scores.to_numpy(float))
    table.index = table.columns = list(scores.columns)
    return table


def critical_difference(n_recipes: int, n_problems: int, alpha: float = 0.05) -> float:
    """Nemenyi's critical difference of mean ranks: q_alpha · sqrt(k(k+1) / 6N), where q_alpha
    is the studentized range quantile over sqrt(2) (Demšar 2006, section 3.2.2)."""
    from scipy import stats as st

    if n_recipes < 2 or n_problems < 1:
        return math.nan
    q = st.studentized_range.ppf(1 - alpha, n_recipes, np.inf) / math.sqrt(2)
    return float(q * math.sqrt(n_recipes * (n_recipes + 1) / (6 * n_problems)))


def wilcoxon_holm(scores: pd.DataFrame, baseline: str) -> pd.DataFrame:
    """Each other recipe against ``baseline`` over the problems: Wilcoxon's signed-rank test,
    p raw and Holm-adjusted for the number of recipes compared."""
    import pandas as pd

    rows = []
    for recipe in scores.columns:
        if recipe == baseline:
            continue
        statistic, p = wilcoxon(scores[recipe].tolist(), scores[baseline].tolist())
        rows.append({"recipe": recipe, "vs": baseline, "statistic": statistic, "p": p})
    table = pd.DataFrame(rows, columns=["recipe", "vs", "statistic", "p"])
    table["p holm"] = stats.holm(table["p"].tolist())
    return table


def outcome(diff: float, p: float, higher: bool, alpha: float = 0.05) -> str:
    """A recipe against a baseline on one problem: a win or a loss when the difference (recipe
    minus baseline) is significant (p < alpha) and better or worse; else a tie."""
    if math.isnan(p) or p >= alpha or diff == 0:
        return TIE
    return WIN if (diff > 0) == higher else LOSS


def tally(outcomes: Sequence[str]) -> tuple[int, int, int]:
    """(wins, ties, losses)."""
    return outcomes.count(WIN), outcomes.count(TIE), outcomes.count(LOSS)


def performance_ratios(times: pd.DataFrame) -> pd.DataFrame:
    """Each recipe's time on each problem over the best recipe's time there (1 = the best;
    inf where the recipe never reached the target, and for every recipe on a problem that
    none reached)."""
    values = times.to_numpy(float)
    best = np.min(values, axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        ratios = np.where(np.isfinite(best) & np.isfinite(values), values / best, np.inf)
    return type(times)(ratios, index=times.index, columns=times.columns)


def performance_profile(times: pd.DataFrame, taus: Sequence[float]) -> pd.DataFrame:
    """ρ(τ): for each recipe (row) and each τ (column), the share of problems on which its
    time to target is at most τ times the best recipe's."""
    import pandas as pd

    ratios = performance_ratios(times)
    shares = {tau: (ratios <= tau).mean(axis=0) for tau in taus}
    return pd.DataFrame(shares, index=times.columns)


def profile_taus(times: pd.DataFrame) -> list[float]:
    """τ values worth showing: 1, and the points where some recipe's share changes."""
    ratios = performance_ratios(times).to_numpy(float)
    finite = sorted({float(r) for r in ratios.ravel() if math.isfinite(r) and r > 1})
    return [1.0, *finite]


def partial_conjunction(p_values: Sequence[float], k: int) -> float:
    """The p-value that at least ``k`` of the ``n`` hypotheses are false (Benjamini and Heller,
    2008, with Bonferroni's combination): (n - k + 1) · p_(k), the k-th smallest p. For k = n it
    is the largest p (every test must reject); for k = 1, Bonferroni's smallest. NaN counts
    as 1."""
    ordered = sorted(1.0 if p is None or math.isnan(p) else float(p) for p in p_values)
    n = len(ordered)
    if not 1 <= k <= n:
        return math.nan
    return min(1.0, (n - k + 1) * ordered[k - 1])


def scores_table(values: Mapping[str, Mapping[str, float]]) -> pd.DataFrame:
    """Problem -> recipe -> score as a table (problems as rows, in the order given)."""
    import pandas as pd

    table = pd.DataFrame(values).T
    return table.astype(float)
