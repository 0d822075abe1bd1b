"""glibc's transparent-huge-page malloc for the ``zylax`` command (Linux only).

An XLA CPU training step allocates and touches hundreds of MB of temporary
buffers; with 4 KiB pages the kernel faults each page in, every step. With
``GLIBC_TUNABLES=glibc.malloc.hugetlb=1`` (glibc >= 2.35: malloc asks for
transparent huge pages with ``madvise``) far fewer pages fault in (measured:
``python -m benchmarks.hugepages``, BENCHMARKS.md, section 10). glibc
reads the setting only when a process starts, so the ``zylax`` command
starts itself once more with it; ``ZYLAX_HUGEPAGES=0`` turns that off
(``python -m zylax.cli`` never restarts). In a notebook or a script, set it
before Python starts, e.g. ``GLIBC_TUNABLES=glibc.malloc.hugetlb=1 jupyter lab``.
"""

from __future__ import annotations

import os
import platform
import sys
from typing import Mapping

TUNABLE = "glibc.malloc.hugetlb=1"
RESTARTED = "ZYLAX_HUGEPAGES_RESTARTED"
"""Set in the restarted process, which glibc may strip ``GLIBC_TUNABLES`` from."""
THP_MODE = "/sys/kernel/mm/transparent_hugepage/enabled"


def glibc_with_hugetlb(libc: tuple[str, str] | None = None) -> bool:
    """Whether this process runs on glibc >= 2.35 (``libc``: ``platform.libc_ver()``)."""
    name, version = platform.libc_ver() if libc is None else libc
    try:
        return name == "glibc" and tuple(int(p) for p in version.split(".")[:2]) >= (2, 35)
    except ValueError:
        return False


def huge_pages_possible(mode_file: str = THP_MODE) -> bool:
    """False when the kernel's transparent huge pages are ``[never]`` (True if unknown)."""
    try:
        with open(mode_file) as f:
            return "[never]" not in f.read()
    except OSError:
        return True


def tuned_environment(environ: Mapping[str, str], system: str = sys.platform,
                      supported: bool | None = None) -> dict[str, str] | None:
    """``environ`` with ``TUNABLE`` added to ``GLIBC_TUNABLES``, or None when not to restart.

    None unless ``system`` is Linux and ``supported`` (default: glibc >= 2.35
    and transparent huge pages not turned off); None when
    ``ZYLAX_HUGEPAGES=0``, when ``GLIBC_TUNABLES`` already sets
    ``glibc.malloc.hugetlb`` (to any value), or in a restarted process.
    """
    if not system.startswith("linux"):
        return None
    if environ.get("ZYLAX_HUGEPAGES", "1") == "0" or environ.get(RESTARTED):
        return None
    tunables = environ.get("GLIBC_TUNABLES", "")
    if "glibc.malloc.hugetlb" in tunables:
        return None
    if supported is None:
        supported = glibc_with_hugetlb() and huge_pages_possible()
    if not supported:
        return None
    return {**environ, RESTARTED: "1",
            "GLIBC_TUNABLES": f"{tunables}:{TUNABLE}" if tunables else TUNABLE}


def restart_tuned() -> None:
    """Replaces this process with itself under ``tuned_environment`` (returns if not needed).

    The same interpreter, options and arguments (``sys.orig_argv``). Only for
    a script started from a file, as the ``zylax`` console script is; it must
    run before any work, as nothing is kept. If the restart fails, the
    process goes on as it is.
    """
    environ = tuned_environment(os.environ)
    if environ is None or not sys.executable or not os.path.isfile(sys.argv[0]):
        return
    for stream in (sys.stdout, sys.stderr):
        if stream is not None:
            stream.flush()
    try:
        os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], environ)
    except OSError:
        return
