"""llama.cpp, the peer for language models: built once from the source that the
``llama-cpp-python`` sdist vendors, and cached.

    python -m benchmarks.llama_cpp          # build (or find) it; prints the bin directory

The sdist comes from ``pip download --no-deps --no-binary :all: llama-cpp-python==VERSION``
(the project's package index; nothing else is fetched), is unpacked, and its
``vendor/llama.cpp`` is built with CMake for this CPU (``GGML_NATIVE``, as a user would)
with the tools the benchmarks run: ``llama-bench``, ``llama-perplexity``, ``llama-quantize``,
``llama-completion`` (greedy answers to the gate's questions).
The result lives in ``$EDGE_AIGC_CACHE/llama.cpp/<version>/bin`` (default ~/.cache/edge-aigc).
"""
from __future__ import annotations

import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from converters.cache import cache_root

__all__ = ["VERSION", "TOOLS", "cache_dir", "ensure_llama_cpp"]

VERSION = "0.3.36"  # llama-cpp-python; its vendor/llama.cpp is the commit benchmarked
TOOLS = ("llama-bench", "llama-perplexity", "llama-quantize", "llama-completion")


def cache_dir() -> Path:
    return cache_root() / "llama.cpp" / VERSION


def _run(cmd: list[str], log, cwd: Path | None = None) -> None:
    log(" ".join(cmd))
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-15:])
        raise RuntimeError(f"{cmd[0]} failed ({proc.returncode}):\n{tail}")


def ensure_llama_cpp(log=lambda line: print(line, file=sys.stderr, flush=True)) -> Path:
    """The directory holding the built tools; builds them the first time (~15 min on 2 cores)."""
    bin_dir = cache_dir() / "bin"
    if all((bin_dir / tool).is_file() for tool in TOOLS):
        return bin_dir
    with tempfile.TemporaryDirectory(prefix="edge-aigc-llama-cpp-") as tmp:
        work = Path(tmp)
        _run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
              f"llama-cpp-python=={VERSION}", "-d", str(work)], log)
        [sdist] = work.glob("llama_cpp_python-*.tar.gz")
        with tarfile.open(sdist) as tar:
            tar.extractall(work, filter="data")
        src = next(work.glob("llama_cpp_python-*/vendor/llama.cpp"))
        build = work / "build"
        jobs = str(len(os.sched_getaffinity(0)))
        _run(["cmake", "-S", str(src), "-B", str(build), "-G", "Ninja", "-DCMAKE_BUILD_TYPE=Release",
              "-DGGML_NATIVE=ON", "-DLLAMA_CURL=OFF", "-DLLAMA_BUILD_TESTS=OFF", "-DLLAMA_BUILD_SERVER=OFF",
              "-DBUILD_SHARED_LIBS=OFF"], log)
        _run(["cmake", "--build", str(build), "-j", jobs, "--target", *TOOLS], log)
        bin_dir.mkdir(parents=True, exist_ok=True)
        for tool in TOOLS:
            (build / "bin" / tool).replace(bin_dir / tool)
    return bin_dir


if __name__ == "__main__":
    print(ensure_llama_cpp())
