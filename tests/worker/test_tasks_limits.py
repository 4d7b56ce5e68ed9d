"""The worker child that loads untrusted models runs under address-space and CPU-time ceilings."""
from __future__ import annotations

import os
import subprocess
import sys

CHILD = """
import resource
from worker.celery_app import limit_child_process
limit_child_process()
print(resource.getrlimit(resource.RLIMIT_AS)[0], resource.getrlimit(resource.RLIMIT_CPU)[0])
try:
    blob = bytearray(3 * 1024 ** 3)
    print("allocated")
except MemoryError:
    print("MemoryError")
"""


def test_child_limits_are_applied(tmp_path):
    env = {**os.environ, "ZERODATA_HOME": str(tmp_path), "ZERODATA_WORKER_MEMORY_LIMIT_MB": "1536",
           "ZERODATA_TASK_SOFT_TIME_LIMIT_S": "50", "ZERODATA_TASK_HARD_TIME_LIMIT_S": "60"}
    for name in ("DATABASE_URL", "BROKER_URL", "STORAGE_URL"):
        env.pop(name, None)
    out = subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    address_space, cpu, outcome = out.stdout.split()
    assert int(address_space) == 1536 * 1024 * 1024
    assert int(cpu) == 60 * 8 + 60
    assert outcome == "MemoryError"
