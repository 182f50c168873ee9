#!/bin/sh
# Drop from the image's venv what pip installs but nothing runs: the builder stage calls this
# after `pip check`, so the final stage copies a smaller /opt/pulsar (all three images).
# Measured on the trainer image (bench/bench_images.py prints the sizes): the packages' test
# suites (~240 MB with their bytecode: torch/test, pandas, sympy, scipy, numpy, sklearn, ...),
# torch's C++ headers and test binaries (~110 MB: for building extensions and for torch's own
# CI; no compiler is in the image, so torch.compile / cpp_extension cannot run there anyway),
# pyarrow's Flight libraries (~35 MB), and Cython/C sources and headers of other
# packages (~15 MB).
# Kept on purpose: the bytecode (*.pyc) of everything that runs — the root filesystem is
# read-only, so without it every start would recompile torch, pandas and scipy in memory.
set -eu
venv="${1:?usage: prune-venv.sh VENV}"
site="$(echo "$venv"/lib/python3*/site-packages)"
[ -d "$site" ] || { echo "prune-venv: no site-packages under $venv" >&2; exit 1; }
before="$(du -sm "$venv" | cut -f1)"

# Test suites: imported only by their own test runners (numpy.testing, torch.testing and
# sympy.testing are runtime APIs and are not named `tests`).
find "$site" -type d -name tests -prune -exec rm -rf {} +
rm -rf "$site"/torch/test "$site"/joblib/test "$site"/gitdb/test "$site"/smmap/test

# torch: headers and CMake files are for building C++ extensions; torch/bin holds torch's own
# C++ test programs and a protoc; only torch_shm_manager (tensor sharing between processes)
# runs. Test-only libraries in torch/lib are loaded by torch's test suite alone.
if [ -d "$site/torch" ]; then
  rm -rf "$site"/torch/include "$site"/torch/share/cmake
  find "$site/torch/bin" -mindepth 1 ! -name torch_shm_manager -exec rm -rf {} +
  rm -f "$site"/torch/lib/libjitbackend_test.so "$site"/torch/lib/libtorchbind_test.so \
        "$site"/torch/lib/libbackend_with_compiler.so "$site"/torch/lib/libaoti_custom_ops.so
fi

# pyarrow's Arrow Flight RPC (~35 MB): nothing here imports pyarrow.flight and no other pyarrow
# library links to it (tests/images imports every Pulsar module in the image). Substrait stays:
# libarrow_python links to it.
rm -f "$site"/pyarrow/libarrow_flight.so* "$site"/pyarrow/libarrow_python_flight.so* \
      "$site"/pyarrow/_flight.*.so "$site"/pyarrow/flight.py

# Headers and Cython/C/C++ sources shipped for building against a package, never imported.
rm -rf "$site"/pyarrow/include "$site"/pyarrow/src
find "$site" -type f \( -name '*.pyx' -o -name '*.pxd' -o -name '*.pxi' -o -name '*.h' \
  -o -name '*.hpp' -o -name '*.c' -o -name '*.cc' -o -name '*.cpp' \) -delete

echo "prune-venv: $venv ${before} MB -> $(du -sm "$venv" | cut -f1) MB"
