"""Bad input ends a command cleanly: its message on stderr and exit code 2, as argparse does,
with no traceback and no Hydra hint about HYDRA_FULL_ERROR (that hint, and the full traceback,
stay for real crashes). Used where lossbench's checks run: before a single run's output
directory exists, in the launcher and in the sweeper."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import NoReturn

EXIT_CODE = 2  # as argparse's usage errors


def fail(message: str, prog: str = "lossbench-train", code: int = EXIT_CODE) -> NoReturn:
    """Print ``prog: error: message`` on stderr and exit with ``code``."""
    sys.stdout.flush()
    print(f"{prog}: error: {message}", file=sys.stderr, flush=True)
    raise SystemExit(code)


@contextmanager
def clean_errors(prog: str = "lossbench-train") -> Iterator[None]:
    """Within the block, a :class:`lossbench.config.spec.ConfigError` or an unreachable store ends
    the command through :func:`fail`."""
    from lossbench.config.spec import ConfigError
    from lossbench.tracking.store import StoreUnreachable

    try:
        yield
    except (ConfigError, StoreUnreachable) as err:
        fail(str(err), prog)
