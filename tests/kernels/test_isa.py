"""ISA detection from CPU flags plus compiler support; portable is always there."""
from kernels.isa import ISAS, cpu_flags, detect_isa, runnable_isas

AVX512_CPU = "processor\t: 0\nflags\t\t: fpu sse sse2 avx avx2 fma avx512f avx512bw avx512vl avx512dq\n"
AVX2_CPU = "processor\t: 0\nflags\t\t: fpu sse sse2 avx avx2 fma\n"
OLD_CPU = "processor\t: 0\nflags\t\t: fpu sse sse2\n"


def test_flags_parsed_from_cpuinfo_text():
    assert {"avx2", "fma", "avx512f"} <= cpu_flags(AVX512_CPU)
    assert cpu_flags("no flags line here") == set()
    assert cpu_flags("") == set()


def test_choice_follows_cpu_flags():
    # The compiler here supports all three, so the CPU decides.
    assert detect_isa(cpuinfo=AVX512_CPU) == "avx512"
    assert detect_isa(cpuinfo=AVX2_CPU) == "avx2"
    assert detect_isa(cpuinfo=OLD_CPU) == "portable"
    assert detect_isa(cpuinfo="garbage\x00\xff") == "portable"


def test_avx512_needs_every_subset_flag():
    partial = "flags\t: avx2 fma avx512f\n"       # no bw/vl/dq: not enough for the generated code
    assert detect_isa(cpuinfo=partial) == "avx2"


def test_missing_compiler_means_portable_only():
    assert runnable_isas(compiler="/nonexistent/cxx", cpuinfo=AVX512_CPU) == ["portable"]


def test_this_machine():
    found = runnable_isas()
    assert found[-1] == "portable" and set(found) <= set(ISAS)
    assert detect_isa() == found[0]
