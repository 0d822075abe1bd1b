"""glibc's transparent-huge-page malloc for the ``zylax`` command (Linux only).

An XLA CPU training step allocates and touches hundreds of MB of temporary
buffers; with 4 KiB pages the kernel faults each page in, every step. On
this project's 2-core machine a DeepLabV3Small step at batch 16 took about
114,000 minor page faults and 0.7 cores of kernel time; with
``GLIBC_TUNABLES=glibc.malloc.hugetlb=1`` (glibc >= 2.35: malloc asks for
transparent huge pages with ``madvise``) it took about 600 and ran 1.2x the
steps a second (``python -m benchmarks.hugepages``, BENCHMARKS.md). glibc
reads the setting only when a process starts, so the ``zylax`` command
starts itself once more with it; ``ZYLAX_HUGEPAGES=0`` turns that off. In a
notebook or a script, set it before Python starts, e.g.
``GLIBC_TUNABLES=glibc.malloc.hugetlb=1 jupyter lab``.
"""

from __future__ import annotations

import os
import platform
import sys
from typing import Mapping

TUNABLE = "glibc.malloc.hugetlb=1"


def tuned_environment(environ: Mapping[str, str], system: str = sys.platform,
                      libc: str | None = None) -> dict[str, str] | None:
    """``environ`` with ``TUNABLE`` added to ``GLIBC_TUNABLES``, or None when not to re-run.

    None on a system other than Linux with glibc, when ``ZYLAX_HUGEPAGES=0``,
    or when ``GLIBC_TUNABLES`` already sets ``glibc.malloc.hugetlb`` (so a
    re-run process never re-runs again).
    """
    libc = platform.libc_ver()[0] if libc is None else libc
    if not system.startswith("linux") or libc != "glibc":
        return None
    if environ.get("ZYLAX_HUGEPAGES", "1") == "0":
        return None
    tunables = environ.get("GLIBC_TUNABLES", "")
    if "glibc.malloc.hugetlb" in tunables:
        return None
    return {**environ, "GLIBC_TUNABLES": f"{tunables}:{TUNABLE}" if tunables else TUNABLE}


def restart_tuned() -> None:
    """Replaces this process with itself under ``tuned_environment`` (returns if not needed).

    Only for a script started from a file (``sys.argv[0]``), as the ``zylax``
    console script is; it must run before any work, as nothing is kept.
    """
    environ = tuned_environment(os.environ)
    if environ is None or not os.path.isfile(sys.argv[0]):
        return
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, *sys.argv], environ)
