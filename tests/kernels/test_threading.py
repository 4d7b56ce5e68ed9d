"""Where the kernels' parallel items run: on torch's own OpenMP threads inside a torch process (a second pool
would fight torch's spinning OpenMP workers for the cores), on the library's own pool with ZD_KERNEL_THREADS=own."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from kernels.build import build_library
from kernels.codegen import generate_source
from kernels.conv_op import CompiledConv
from kernels.format import compact_conv
from kernels.isa import detect_isa
from kernels.spec import ConvSpec, TileConfig
from tests.kernels.test_format import LIB8, pattern_pruned

SPEC = ConvSpec("threads_layer", 16, 16, 20, 20, relu=True)


@pytest.fixture(scope="module")
def library(tmp_path_factory):
    weight = pattern_pruned(16, 16, LIB8, connectivity=0.5, seed=3)
    bias = torch.randn(16, generator=torch.Generator().manual_seed(4))
    source = generate_source([(SPEC, compact_conv(weight, bias, name=SPEC.name), TileConfig(4, 2, 0))], detect_isa())
    return build_library(source, isa=detect_isa(), cache_dir=tmp_path_factory.mktemp("threads")), weight, bias


def _threads() -> int:
    return len(os.listdir("/proc/self/task"))


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="counts threads through /proc")
def test_kernels_share_torchs_openmp_threads_instead_of_starting_a_pool(library):
    path, weight, bias = library
    x = torch.randn(2, 16, 20, 20, generator=torch.Generator().manual_seed(5))
    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        expected = torch.relu(F.conv2d(x, weight, bias, padding=1))  # torch's OpenMP team of 2 now exists
        before = _threads()
        op = CompiledConv(path, SPEC)
        # One call = two parallel regions (pad, compute): within the first 32 calls, whose barrier stalls the
        # library never counts, so the answer does not depend on how busy the machine is.
        torch.testing.assert_close(op(x), expected, rtol=1e-4, atol=1e-4)
        assert _threads() == before
    finally:
        torch.set_num_threads(previous)


CHILD = """
import os, sys, torch
from kernels.conv_op import CompiledConv
from kernels.spec import ConvSpec
torch.set_num_threads(2)
x = torch.randn(2, 16, 20, 20)
torch.nn.functional.conv2d(x, torch.randn(16, 16, 3, 3), padding=1)
before = len(os.listdir("/proc/self/task"))
CompiledConv(sys.argv[1], ConvSpec("threads_layer", 16, 16, 20, 20, relu=True))(x)
print(len(os.listdir("/proc/self/task")) - before)
"""


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="counts threads through /proc")
def test_own_pool_on_request(library):
    path, _, _ = library
    env = {**os.environ, "ZD_KERNEL_THREADS": "own"}
    done = subprocess.run([sys.executable, "-c", CHILD, str(path)], capture_output=True, text=True, env=env,
                          timeout=120, cwd=Path(__file__).resolve().parents[2])
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "1"  # the library's one worker thread
