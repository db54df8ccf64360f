"""How much memory a run may take: the limit behind ``--num`` and ``--windows`` (stdlib only)."""

from __future__ import annotations

import os

from geo_ppp.errors import ConfigError

__all__ = ["available_memory", "check_memory"]

#: Share of the available memory one run's samples or windows may take.
MEMORY_SHARE = 0.5


def available_memory() -> int:
    """Bytes of memory available now (``MemAvailable``; the free pages where /proc is missing)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (OSError, ValueError, AttributeError):
        return 8 * 2**30  # unknown: assume a modest machine


def check_memory(count: int, per_item: float, option: str, what: str, hint: str = "") -> None:
    """Refuse ``count`` items of ``per_item`` bytes each when they exceed half the available memory.

    Raises:
        ConfigError: naming the option, the value, the estimate, the memory and the largest value
            that fits (checked before any work).
    """
    budget = MEMORY_SHARE * available_memory()
    need = count * per_item
    if need <= budget:
        return
    most = max(1, int(budget // max(per_item, 1)))
    raise ConfigError(
        f"{option} {count} needs about {need / 2**30:.1f} GiB ({per_item / 2**20:.2f} MiB per {what}, "
        f"all held in memory at once), more than half of the {available_memory() / 2**30:.1f} GiB available; "
        f"ask for at most {most}{hint}"
    )
