"""How the report shows an axis's values: numbers at sensible precision, and axes searched
over a range (an Optuna study's learning rate) told apart from grids.

- Numbers are shown with 4 significant digits (``optimizer.lr=0.05602``, not
  ``0.056016038175032964``), or with as many more as keep the axis's values apart: two values
  never share a label, so grouping by the shown values is grouping by the recorded ones.
- A searched axis is a recipe axis of numbers where no value was run twice: each value is one
  trial (Optuna draws a new one each time), so a group per value has one run and nothing to
  test. The report then groups by the other axes, shows each group's best trials, and takes
  the best value of the searched axis per group on validation (the fair comparison) first.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd

DIGITS = 4  # significant digits of a number in a group's label, at least
MIN_SEARCHED_VALUES = 3  # fewer distinct values: a small grid, whatever their runs


def _number(text: object) -> float | None:
    if not isinstance(text, str) or text.strip().lower() in ("nan", "inf", "-inf", "true", "false"):
        return None
    try:
        return float(text)
    except ValueError:
        return None


def short_values(values: Iterable[object]) -> dict[str, str]:
    """Recorded text -> shown text of an axis's values: numbers to :data:`DIGITS` significant
    digits, or more where fewer would give two values one label; the rest as recorded."""
    texts = sorted({v for v in values if isinstance(v, str)})
    numbers = {t: n for t in texts if (n := _number(t)) is not None}
    for digits in range(DIGITS, 18):
        shown = {t: f"{n:.{digits}g}" if len(t) > len(f"{n:.{digits}g}") else t
                 for t, n in numbers.items()}  # fmt: skip
        if len(set(shown.values())) == len(shown):
            return {t: shown.get(t, t) for t in texts}
    return {t: t for t in texts}


def shorten(frame: pd.DataFrame, axes: Sequence[str]) -> dict[str, dict[str, str]]:
    """Show each axis's values in ``frame`` as :func:`short_values` does (in place; the
    recorded texts stay in a column ``<axis> (recorded)``); returns, per axis, the recorded
    texts that changed and what they became."""
    changed: dict[str, dict[str, str]] = {}
    for axis in axes:
        mapping = short_values(frame[axis])
        renamed = {k: v for k, v in mapping.items() if k != v}
        if renamed:
            frame[f"{axis} (recorded)"] = frame[axis]
            frame[axis] = frame[axis].map(lambda v, m=renamed: m.get(v, v))
            changed[axis] = renamed
    return changed


def searched_axes(frame: pd.DataFrame, axes: Sequence[str], choices: Iterable[str]) -> list[str]:
    """The axes searched over a range: params (not group choices) whose values are all numbers,
    at least :data:`MIN_SEARCHED_VALUES` of them, none run twice."""
    chosen = set(choices)
    found = []
    for axis in axes:
        if axis in chosen:
            continue
        values = frame[axis].tolist()
        numeric = all(_number(v) is not None for v in values)
        if numeric and len(set(values)) >= MIN_SEARCHED_VALUES and len(set(values)) == len(values):
            found.append(axis)
    return found


def translate(spec: Mapping[str, str], changed: Mapping[str, Mapping[str, str]]) -> dict[str, str]:
    """``--vs``'s axis=value pairs with recorded values given in full shown as the report
    shows them."""
    return {axis: changed.get(axis, {}).get(value, value) for axis, value in spec.items()}
