"""Reported results as data, judged by their own sweeps: ``lossbench-claims [IDS...]``.

A claim is one YAML file under ``conf/claims/`` (no Python per claim): the statement, a sweep
(``base`` overrides, ``axes`` of named override sets, ``seeds``), the metric it reads and the
assertions to test. ``lossbench-claims`` trains whatever the store does not already hold (by
config hash, so nothing is trained twice), evaluates every assertion on the recorded metrics
and gives each claim a verdict:

- REPRODUCED: every assertion holds: the claimed direction, p < alpha, and an effect of at
  least ``min_effect`` (in the metric's units); for ``equivalent``, both one-sided tests of
  TOST reject (the difference is within ``margin``);
- NOT REPRODUCED: an assertion fails: the opposite direction is significant, or the effect is
  significant but smaller than ``min_effect``, or (for a range) the 95% CI lies outside it, or
  a difference beyond an equivalence margin is significant;
- INCONCLUSIVE: otherwise (not enough evidence either way).

A claim with ``nuisance: {axis, select, mode}`` judges each group at its best value of that
axis (the best mean ``val/`` metric; diverged runs lose), on another split.

See the README for the file format and complete examples. The modules, in the order a claim
goes through them: ``spec`` (a claim as data), ``load`` (reading claim files), ``run`` (the
sweeps), ``evaluate`` (the verdicts, one entry per assertion kind) with ``evidence`` (the
numbers runs contribute), ``select`` (best over a nuisance axis) and ``equivalence`` (TOST),
``render`` (table, plots, JSON), ``files`` (the report files, by claim id) and ``cli``.
"""

from lossbench.claims.cli import main
from lossbench.claims.evaluate import KINDS, Verdict, describe, evaluate, evaluate_assertion
from lossbench.claims.evidence import INCONCLUSIVE, NOT_REPRODUCED, REPRODUCED, Evidence, RunData
from lossbench.claims.files import write_report
from lossbench.claims.load import (
    CLAIMS_DIR,
    ClaimFiles,
    MissingClaim,
    load_claim,
    load_claims,
    read_claims,
)
from lossbench.claims.render import print_verdicts, verdicts_json
from lossbench.claims.run import check_metrics, run_claims
from lossbench.claims.spec import Assertion, Claim, ClaimError, Nuisance, Selector, job_key

__all__ = [
    "CLAIMS_DIR",
    "INCONCLUSIVE",
    "KINDS",
    "NOT_REPRODUCED",
    "Nuisance",
    "REPRODUCED",
    "Assertion",
    "Claim",
    "ClaimError",
    "ClaimFiles",
    "Evidence",
    "MissingClaim",
    "RunData",
    "Selector",
    "Verdict",
    "check_metrics",
    "describe",
    "evaluate",
    "evaluate_assertion",
    "job_key",
    "load_claim",
    "load_claims",
    "main",
    "print_verdicts",
    "read_claims",
    "run_claims",
    "verdicts_json",
    "write_report",
]
