"""Settings every test shares, applied before any test module imports torch."""

import os

# The seeded figures the tests pin were measured with AVX2 kernels; on a CPU with AVX-512, MKL,
# oneDNN and ATen would otherwise pick kernels whose rounding differs (see the Makefile).
for _name, _value in (("MKL_CBWR", "AVX2"), ("DNNL_MAX_CPU_ISA", "AVX2"), ("ATEN_CPU_CAPABILITY", "avx2")):
    os.environ.setdefault(_name, _value)
