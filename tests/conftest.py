"""Settings every test shares, applied before any test module imports torch."""

import os

# The seeded figures the tests pin were measured with AVX2 kernels; on a CPU with AVX-512, MKL,
# oneDNN, ATen and numpy would otherwise pick kernels whose rounding differs (see the Makefile).
# numpy reads its variable when first imported: a bare ``pytest`` run imports it before this file
# only through a plugin, and none of ours does.
for _name, _value in (
    ("MKL_CBWR", "AVX2"),
    ("DNNL_MAX_CPU_ISA", "AVX2"),
    ("ATEN_CPU_CAPABILITY", "avx2"),
    ("NPY_DISABLE_CPU_FEATURES", "X86_V4 AVX512_ICL AVX512_SPR"),
):
    os.environ.setdefault(_name, _value)
