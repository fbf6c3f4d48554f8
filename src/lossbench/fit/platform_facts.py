"""What decides a run's floating-point results besides the platform, the package versions and
the thread count: the CPU kernels torch picked, the exact torch build and the device.

Two machines with the same packages can still differ in the last bits: torch picks its CPU
kernels (DEFAULT, AVX2, AVX512, ...) by what the CPU supports, and each sums in its own order.
These tags are computed where a run trains (the sweep's main process never imports torch), added
to each run's result, and compared by ``lossbench-repro``.
"""

from __future__ import annotations

from typing import Any

# the tags float_tags() returns; lossbench-repro compares them (reading them needs no torch)
FLOAT_TAGS = ("lossbench.cpu_capability", "lossbench.torch_build", "lossbench.device")


def float_tags(device: Any) -> dict[str, str]:
    """The tags of :data:`FLOAT_TAGS` for a fit that ran on ``device`` (a ``torch.device``):
    torch's CPU capability, its build (version, git commit, CUDA version or "none") and the
    device ("cpu", or the CUDA device's name)."""
    import torch

    build = (
        f"{torch.__version__} git {torch.version.git_version} cuda {torch.version.cuda or 'none'}"
    )
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else device.type
    return {
        "lossbench.cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "lossbench.torch_build": build,
        "lossbench.device": name,
    }
