"""The only Hydra internals lossbench uses, in one place, for the hydra-core versions they were
checked against: importing this module on any other version fails, naming the supported range.

- ``BasicSweeper``: lossbench's sweeper extends Hydra's grid sweeper, so that a grid
  (``hydra.sweeper.params`` and command-line lists, batches of ``max_batch_size``) expands
  exactly as with ``hydra/sweeper=basic``. Hydra's public ``Sweeper`` interface has no grid of
  its own; writing one would copy Hydra's.
- ``get_overrides_dirname``: a job composed by :mod:`lossbench.sweep.jobs` must get the
  ``hydra.job.override_dirname`` Hydra itself would give it (people put it in
  ``hydra.sweep.subdir``); Hydra has no public function for it.
- ``get_args_parser``: ``lossbench-train`` checks a single run before Hydra makes its output
  directory (bad input writes nothing), so it reads the command line as ``@hydra.main`` will;
  Hydra has no public parser.
"""

from __future__ import annotations

import re
from importlib.metadata import version
from typing import Any

SUPPORTED = ">=1.3.2,<1.4"  # as pyproject.toml requires


def _check_version() -> None:
    found = version("hydra-core")
    match = re.match(r"(\d+)\.(\d+)\.(\d+)", found)
    numbers = tuple(int(n) for n in match.groups()) if match else ()
    if not (1, 3, 2) <= numbers < (1, 4):
        # RuntimeError, not ImportError: Hydra's plugin scan would turn that into a warning
        raise RuntimeError(
            f"lossbench needs hydra-core {SUPPORTED} (it uses Hydra internals, see "
            f"lossbench/hydra_private.py); this environment has hydra-core {found}"
        )


_check_version()

from hydra._internal.config_loader_impl import get_overrides_dirname  # noqa: E402
from hydra._internal.utils import get_args_parser  # noqa: E402

__all__ = ["SUPPORTED", "BasicSweeper", "get_args_parser", "get_overrides_dirname"]  # noqa: F822


def __getattr__(name: str) -> Any:
    # BasicSweeper only when asked for: Hydra's plugin scan loads its core plugins' modules
    # again, and a BasicSweeper imported before that scan (lossbench-train's check of a single
    # run, before Hydra starts) would no longer be the one its own __init__ names
    if name == "BasicSweeper":
        from hydra._internal.core_plugins.basic_sweeper import BasicSweeper

        return BasicSweeper
    raise AttributeError(name)
