"""Build llama.cpp's `llama-server` from the source tree a PyPI sdist vendors, cached per version.

The conformance tests need a real OpenAI-compatible server, and nothing but PyPI and Debian
packages may be fetched: llama-cpp-python's sdist carries llama.cpp under vendor/llama.cpp, so
pip downloads that sdist and cmake builds the CPU-only server target from it. The binary and the
vocabulary files the tiny model needs are kept under ~/.cache/llm-exporter/llama-server-<ver>/
and reused while present; a build takes about ten to twenty minutes on two cores.

Run `python3 -m tests.conformance.build_llama_server` to warm the cache.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

# Pinned: the tests' expectations (wire format, /metrics counter names) follow this server version.
LLAMA_CPP_PYTHON = "0.3.36"
CACHE_ROOT = Path(os.environ.get("LLM_EXPORTER_CACHE", Path.home() / ".cache" / "llm-exporter"))
# The vocabulary the tiny model uses, copied out of the source tree next to the binary.
VOCAB = "ggml-vocab-llama-spm.gguf"

CMAKE_FLAGS = (
    "-DCMAKE_BUILD_TYPE=Release",
    "-DBUILD_SHARED_LIBS=OFF",  # one self-contained binary to cache
    "-DGGML_NATIVE=OFF",  # portable across the CPUs a cache may move between
    "-DLLAMA_CURL=OFF",
    "-DLLAMA_OPENSSL=OFF",
    "-DLLAMA_BUILD_UI=OFF",
    "-DLLAMA_USE_PREBUILT_UI=OFF",  # else the build fetches the web UI from outside
    "-DLLAMA_BUILD_TESTS=OFF",
    "-DLLAMA_BUILD_EXAMPLES=OFF",
    "-DLLAMA_BUILD_SERVER=ON",
)


def cache_dir(version: str = LLAMA_CPP_PYTHON) -> Path:
    return CACHE_ROOT / f"llama-server-{version}"


def cached_binary(version: str = LLAMA_CPP_PYTHON) -> Path | None:
    """The cached server binary, or None when it has not been built yet."""
    binary = cache_dir(version) / "llama-server"
    return binary if binary.is_file() and (cache_dir(version) / VOCAB).is_file() else None


def _run(cmd: list[str], cwd: Path | None = None) -> None:
    print("+", " ".join(cmd), file=sys.stderr, flush=True)
    subprocess.run(cmd, cwd=cwd, check=True)


def _fetch_source(version: str, workdir: Path) -> Path:
    """Download the sdist through pip and unpack it; returns the vendored llama.cpp tree."""
    _run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:",
          f"llama-cpp-python=={version}", "-d", str(workdir)])
    (sdist,) = workdir.glob("llama_cpp_python-*.tar.gz")
    with tarfile.open(sdist) as archive:
        archive.extractall(workdir, filter="data")
    return workdir / f"llama_cpp_python-{version}" / "vendor" / "llama.cpp"


def build(version: str = LLAMA_CPP_PYTHON, jobs: int = 2) -> Path:
    """Build llama-server unless it is cached; returns the binary's path."""
    done = cached_binary(version)
    if done:
        return done
    for tool in ("cmake", "c++"):
        if shutil.which(tool) is None:
            raise RuntimeError(f"building llama-server needs {tool} on PATH (Debian: cmake, g++)")
    target = cache_dir(version)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="llama-build-") as tmp:
        source = _fetch_source(version, Path(tmp))
        build_dir = Path(tmp) / "build"
        _run(["cmake", "-S", str(source), "-B", str(build_dir), *CMAKE_FLAGS])
        _run(["cmake", "--build", str(build_dir), "--target", "llama-server", "-j", str(jobs)])
        staging = target.with_name(target.name + ".partial")
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        shutil.copy2(build_dir / "bin" / "llama-server", staging / "llama-server")
        shutil.copy2(source / "models" / VOCAB, staging / VOCAB)
        shutil.rmtree(target, ignore_errors=True)
        staging.rename(target)  # whole or absent: a killed build leaves no half cache
    print(f"llama-server {version} built in {time.monotonic() - started:.0f} s", file=sys.stderr)
    return target / "llama-server"


if __name__ == "__main__":
    print(build())
