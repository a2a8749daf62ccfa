#!/usr/bin/env bash
# On a GPU machine with no package index (the device tool), from the repository root, after bench/gpu/pack.sh:
#   bash bench/gpu/run.sh setup   # carry .gpu/a: unpacks, installs the wheels, starts the CUDA build in the background
#   bash bench/gpu/run.sh bench   # carry .gpu/b: joins the GGUF, waits for the build, runs the benchmarks into $OUT
#   bash bench/gpu/run.sh draws   # carry .gpu/b where bench did not run: tokens drawn in the graph against in Python
#   bash bench/gpu/run.sh ttft    # likewise: where a request's first token spends its time (bench/first_token.py)
# llama.cpp is built once, with CUDA for this card, and serves both sides: its libraries go under the carried
# llama-cpp-python code for oasis, and llama-server and llama-batched-bench come from the same build.
set -uo pipefail
root=$(pwd)
work=/tmp/oasis-gpu
site=/tmp/site
out=${OUT:-/tmp/out}
mkdir -p "$work" "$out"
export PYTHONPATH=$site:$root/src:$root/bench PYTHONUNBUFFERED=1

setup() {
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
    echo "cores: $(nproc); $(python3 --version); $(nvcc --version | tail -1)"
    mkdir -p "$work/src" && tar xJf .gpu/a/llama-src.tar.xz -C "$work/src" || return 1
    cp .gpu/a/model.xz.1 .gpu/a/model-name "$work/"
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" \
        .gpu/a/whl/*.whl || return 1
    rm -rf "$site/llama_cpp" && cp -r .gpu/a/llama_cpp "$site/llama_cpp" && mkdir -p "$site/llama_cpp/lib"
    # With the image's numpy imported before libllama, llama.cpp's model load crashed (seen on an H100 machine);
    # loading llama.cpp first avoids it
    printf 'try:\n    import llama_cpp  # noqa: F401\nexcept Exception:\n    pass\n' > "$site/sitecustomize.py"
    # FlashAttention's kernels are left out to keep the build to a few minutes: neither side uses them then
    setsid nohup bash -c "
        cmake -S $work/src -B $work/build -G Ninja -DCMAKE_BUILD_TYPE=Release -DGGML_CUDA=ON -DGGML_CUDA_FA=OFF \
            -DCMAKE_CUDA_ARCHITECTURES=90 -DBUILD_SHARED_LIBS=ON -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF \
            -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_APP=OFF \
        && cmake --build $work/build --target llama-server llama mtmd llama-batched-bench -j \
        && cp -P $work/build/bin/*.so* $site/llama_cpp/lib/ && touch $work/built; touch $work/build-ended
    " > "$work/build.log" 2>&1 < /dev/null &
    python3 -c "import fastapi, sqlalchemy, pydantic, oasis.app; print('imports ok')"
}

# joins the GGUF (once: the first call after setup carries .gpu/b) and waits for the build
prepare() {
    gguf=$work/$(cat "$work/model-name")
    if [ ! -e "$gguf" ]; then
        cat "$work/model.xz.1" .gpu/b/model.xz.2 \
            | python3 -c 'import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.stdin.buffer), sys.stdout.buffer)' \
            > "$gguf.part" && mv "$gguf.part" "$gguf" || return 1
    fi
    local waited=0
    until [ -e "$work/build-ended" ] || [ $waited -ge 420 ]; do sleep 2; waited=$((waited + 2)); done
    tail -3 "$work/build.log"; echo "waited ${waited}s for the build"
    [ -e "$work/built" ] || { tail -40 "$work/build.log" > "$out/build.log"; return 1; }
    bin=$work/build/bin
}

bench() {
    local started=$(date +%s)
    prepare || return 1
    "$bin/llama-batched-bench" -m "$gguf" -npp 16 -ntg "${MAX_TOKENS:-256}" -npl "${LEVELS:-1,8,16,64}" -c 20000 -t "${THREADS:-8}" -tb "${THREADS:-8}" 2>&1 \
        | grep -E '^\||offloaded|CUDA0' | tee "$out/batched-bench.txt"
    # the benchmarks end by BENCH_SECONDS after this call began (the device tool stops a call at 600 s)
    local deadline=$(( started + ${BENCH_SECONDS:-560} )) left
    for temperature in 0.8 0; do
        left=$(( deadline - $(date +%s) ))
        [ $left -gt 30 ] || break
        timeout --foreground -s INT -k 15 $left python3 bench/chat_vs_llama_server.py --llama-server "$bin/llama-server" \
            --gguf "$gguf" --threads "${THREADS:-8}" --concurrency "${LEVELS:-1,8,16,64}" --max-tokens "${MAX_TOKENS:-256}" \
            --temperature $temperature --staggered --rounds "${ROUNDS:-2}" --report-every-round \
            --batched-bench "$bin/llama-batched-bench" 2>&1 | tee "$out/chat-t$temperature.txt"
    done
}

draws() {
    # the engine's time between decodes with tokens drawn in Python and in llama.cpp's graph (bench/step_draws.py),
    # streams started together and then staggered, and the 0.8 comparison with both servers drawing in the graph
    # (oasis's backend_sampling, llama-server's --backend-sampling), ending BENCH_SECONDS after the call began
    local started=$(date +%s)
    prepare || return 1
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
    timeout --foreground -s INT -k 15 "${DRAW_SECONDS:-120}" python3 bench/step_draws.py --gguf "$gguf" \
        --threads "${THREADS:-8}" --streams "${DRAW_LEVELS:-1,8,16,64}" --tokens "${MAX_TOKENS:-256}" --rounds 2 2>&1 \
        | tee "$out/step-draws.txt"
    timeout --foreground -s INT -k 15 "${DRAW_SECONDS:-120}" python3 bench/step_draws.py --gguf "$gguf" --staggered \
        --threads "${THREADS:-8}" --streams "${LEVELS:-8,16,64}" --tokens 128 --rounds 2 2>&1 \
        | tee "$out/step-draws-staggered.txt"
    local left=$(( started + ${BENCH_SECONDS:-560} - $(date +%s) ))
    [ $left -gt 30 ] || return 0
    timeout --foreground -s INT -k 15 $left python3 bench/chat_vs_llama_server.py --llama-server "$bin/llama-server" \
        --gguf "$gguf" --threads "${THREADS:-8}" --concurrency "${LEVELS:-1,8,16,64}" --max-tokens "${MAX_TOKENS:-256}" \
        --temperature 0.8 --staggered --rounds "${ROUNDS:-2}" --report-every-round --backend-sampling 2>&1 \
        | tee "$out/chat-t0.8-graph.txt"
}
ttft() {
    # where a request's first token spends its time in oasis (bench/first_token.py), alone and beside 8 streams
    prepare || return 1
    # oasis's own Python on the way to the service and out, on this host's CPU (no model: seconds)
    timeout 60 python3 bench/request_path.py --requests 2000 2>&1 | grep '^|' | tee "$out/request-path.txt"
    timeout --foreground -s INT -k 15 "${TTFT_SECONDS:-150}" python3 bench/first_token.py --gguf "$gguf" \
        --threads "${THREADS:-8}" --requests 30 --busy 0,8 2>&1 | tee "$out/first-token.txt"
}
"$@"
