"""zylax.hugepages: when the zylax command restarts itself with glibc's huge-page malloc."""

import os
import platform
import subprocess
import sys

from zylax import hugepages

TUNED = {"GLIBC_TUNABLES": "glibc.malloc.hugetlb=1", hugepages.RESTARTED: "1"}


def test_the_tunable_is_added_once_and_kept_with_others():
    env = hugepages.tuned_environment({"PATH": "/bin"}, "linux", True)
    assert env == {"PATH": "/bin", **TUNED}
    env = hugepages.tuned_environment({"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"},
                                      "linux", True)
    assert env["GLIBC_TUNABLES"] == "glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1"
    # a restarted process is never restarted again, even where glibc strips its tunables
    assert hugepages.tuned_environment(env, "linux", True) is None
    assert hugepages.tuned_environment({hugepages.RESTARTED: "1"}, "linux", True) is None
    # the user's own choice (even =0) stands
    assert hugepages.tuned_environment({"GLIBC_TUNABLES": "glibc.malloc.hugetlb=0"},
                                       "linux", True) is None


def test_no_restart_when_turned_off_or_not_supported():
    assert hugepages.tuned_environment({"ZYLAX_HUGEPAGES": "0"}, "linux", True) is None
    assert hugepages.tuned_environment({}, "darwin", True) is None
    assert hugepages.tuned_environment({}, "linux", False) is None
    assert hugepages.glibc_with_hugetlb(("glibc", "2.36"))
    assert not hugepages.glibc_with_hugetlb(("glibc", "2.31"))
    assert not hugepages.glibc_with_hugetlb(("", ""))


def test_transparent_huge_pages_turned_off_are_read_from_the_kernel_file(tmp_path):
    mode = tmp_path / "enabled"
    mode.write_text("always madvise [never]\n")
    assert not hugepages.huge_pages_possible(str(mode))
    mode.write_text("always [madvise] never\n")
    assert hugepages.huge_pages_possible(str(mode))
    assert hugepages.huge_pages_possible(str(tmp_path / "missing"))


def test_a_script_restarts_itself_with_the_tunable_its_options_and_arguments(tmp_path):
    script = tmp_path / "show.py"
    script.write_text("import os, sys\nfrom zylax import hugepages\nhugepages.restart_tuned()\n"
                      "print(os.environ.get('GLIBC_TUNABLES'), sys.flags.optimize, sys.argv[1:])\n")
    env = {k: v for k, v in os.environ.items()
           if k not in ("GLIBC_TUNABLES", "ZYLAX_HUGEPAGES", hugepages.RESTARTED)}
    run = subprocess.run([sys.executable, "-O", str(script), "a b", "--c"], capture_output=True,
                         text=True, env=env, timeout=120, check=True)
    # this project's machines (Linux, glibc 2.36, huge pages not turned off) do restart
    expected = hugepages.tuned_environment(env)
    if sys.platform == "linux" and hugepages.glibc_with_hugetlb(platform.libc_ver()) \
            and hugepages.huge_pages_possible():
        assert expected is not None
    tunable = expected["GLIBC_TUNABLES"] if expected else None
    assert run.stdout.strip() == f"{tunable} 1 ['a b', '--c']"
    off = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                         env={**env, "ZYLAX_HUGEPAGES": "0"}, timeout=120, check=True)
    assert off.stdout.strip() == "None 0 []"
