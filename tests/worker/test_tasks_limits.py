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


def test_the_compression_budget_never_outlasts_the_task_time_limit():
    from app.config import Settings
    from worker.job_runner import COMPRESSION_SHARE_OF_TIME_LIMIT, config_within_time_limit

    settings = Settings(task_soft_time_limit_s=1000, task_hard_time_limit_s=1100)
    limit = 1000 * COMPRESSION_SHARE_OF_TIME_LIMIT
    job = {"connectivity": 0.5}
    assert config_within_time_limit(job, settings) == {"connectivity": 0.5, "time_budget_s": limit}
    assert job == {"connectivity": 0.5}  # the stored config is not changed
    assert config_within_time_limit({"time_budget_s": None}, settings)["time_budget_s"] == limit
    assert config_within_time_limit({"time_budget_s": 120}, settings)["time_budget_s"] == 120
    assert config_within_time_limit({"time_budget_s": 10 ** 6}, settings)["time_budget_s"] == limit
    assert config_within_time_limit({}, settings, spent_s=100)["time_budget_s"] == limit - 100  # torch import etc.
    assert config_within_time_limit({}, settings, spent_s=10 ** 4)["time_budget_s"] == 1.0
