"""zylax.hugepages: when the zylax command restarts itself with glibc's huge-page malloc."""

import os
import subprocess
import sys

from zylax import hugepages


def test_the_tunable_is_added_once_and_kept_with_others():
    env = hugepages.tuned_environment({"PATH": "/bin"}, "linux", "glibc")
    assert env == {"PATH": "/bin", "GLIBC_TUNABLES": "glibc.malloc.hugetlb=1"}
    env = hugepages.tuned_environment({"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"},
                                      "linux", "glibc")
    assert env["GLIBC_TUNABLES"] == "glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1"
    # a restarted process (or a user's own choice, even =0) is never restarted again
    assert hugepages.tuned_environment(env, "linux", "glibc") is None
    assert hugepages.tuned_environment({"GLIBC_TUNABLES": "glibc.malloc.hugetlb=0"},
                                       "linux", "glibc") is None


def test_no_restart_when_turned_off_or_not_glibc_linux():
    assert hugepages.tuned_environment({"ZYLAX_HUGEPAGES": "0"}, "linux", "glibc") is None
    assert hugepages.tuned_environment({}, "darwin", "") is None
    assert hugepages.tuned_environment({}, "linux", "musl") is None


def test_a_script_restarts_itself_with_the_tunable_and_its_arguments(tmp_path):
    script = tmp_path / "show.py"
    script.write_text("import os, sys\nfrom zylax import hugepages\nhugepages.restart_tuned()\n"
                      "print(os.environ.get('GLIBC_TUNABLES'), sys.argv[1:])\n")
    env = {k: v for k, v in os.environ.items() if k not in ("GLIBC_TUNABLES", "ZYLAX_HUGEPAGES")}
    run = subprocess.run([sys.executable, str(script), "a b", "--c"], capture_output=True,
                         text=True, env=env, timeout=120, check=True)
    expected = hugepages.tuned_environment(env)
    tunable = expected["GLIBC_TUNABLES"] if expected else None
    assert run.stdout.strip() == f"{tunable} ['a b', '--c']"
    off = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                         env={**env, "ZYLAX_HUGEPAGES": "0"}, timeout=120, check=True)
    assert off.stdout.strip() == "None []"
