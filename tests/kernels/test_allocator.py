"""kernels.allocator: glibc keeps freed memory once a package is loaded or compiled (opt-out by env)."""
import os
import subprocess
import sys

import pytest

CHECK = "from kernels.allocator import keep_freed_memory as k; print(k(), k())"


def _run(env_value: str | None) -> str:
    env = {k: v for k, v in os.environ.items() if k != "ZD_KEEP_FREED_MEMORY"}
    if env_value is not None:
        env["ZD_KEEP_FREED_MEMORY"] = env_value
    return subprocess.run([sys.executable, "-c", CHECK], env=env, capture_output=True, text=True,
                          check=True).stdout.strip()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_applied_once_on_glibc():
    assert _run(None) == "True True"


def test_opt_out():
    assert _run("0") == "False False"
