"""The machine a benchmark ran on, for the JSON written beside it."""

import os
import platform
from pathlib import Path


def cpu_name() -> str:
    """The CPU's model name from /proc/cpuinfo (Linux), else what `platform` knows."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def host() -> dict:
    """What every benchmark records of the machine; each adds what it depends on (libraries, threads, RAM)."""
    return {
        "platform": platform.platform(),
        "cpu": cpu_name(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
    }


def load_note(load_averages: list[tuple[float, ...]], own_load: float = 1.0) -> str:
    """Whether other work shared the cores while a benchmark ran, read off the 1-minute load averages it sampled
    (`os.getloadavg()`), which count its own `own_load` too: times are only comparable from a quiet machine."""
    busiest = max(load[0] for load in load_averages)
    if busiest <= own_load + 0.5:
        return (
            f"quiet: the 1-minute load average stayed at or below {busiest:.2f} on {os.cpu_count()} cores, this "
            "run's own work included: times are comparable with other quiet runs."
        )
    return (
        f"shared: the 1-minute load average reached {busiest:.2f} on {os.cpu_count()} cores, more than this run's "
        f"own {own_load:g}: other work ran beside it, so times are noisy (memory is not). Re-run on a quiet machine."
    )
