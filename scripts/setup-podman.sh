#!/usr/bin/env bash
# setup-podman.sh - a Docker Engine API on a unix socket, served by podman, for the container runtime and
# its tests (idempotent; a warm run takes well under 1 s).
#
# Usage:
#   set -a; eval "$(scripts/setup-podman.sh [DIR])"; set +a     # DIR defaults to <repo>/.cache/podman
#   set -a; eval "$(scripts/setup-podman.sh --llama-image)"; set +a   # + localhost/ferrostack-llama:test
# Then e.g. `FERROSTACK_REQUIRE_CONTAINERS=1 cargo test --lib worker::runtime::container` (the llama test
# also wants SMOLLM2_GGUF from `set -a; eval "$(scripts/setup-llm.sh)"`).
#
# What it does (each step skipped when already done):
#   1. apt-get install podman runc crun fuse-overlayfs slirp4netns uidmap busybox-static catatonit
#      containernetworking-plugins (Debian; needs root)
#   2. DIR/containers.conf: default ulimits nofile 20000 / nproc 32768 and the runc runtime. Without it
#      podman fails here with "setrlimit RLIMIT_NOFILE: Operation not permitted" (crun) or "cgroups in
#      hybrid mode not supported" (the default crun cannot raise the limits in this sandbox, and the
#      cgroup layout here is hybrid). Nothing under /etc changes.
#   3. `podman system service --time=0 unix://DIR/podman.sock` in the background (pid in DIR/service.pid,
#      log in DIR/service.log), with CONTAINERS_CONF=DIR/containers.conf; waits for GET /version.
#   4. localhost/ferrostack-busybox:test: a busybox-static rootfs imported with `podman import` (no
#      registry is needed or reachable), smoke-tested with `podman run --rm`.
#   5. (--llama-image) localhost/ferrostack-llama:test: busybox + the host's python interpreter, its standard
#      library and the shared libraries `ldd` lists, + .cache/venv-llm (xllamacpp) + tools/llama-server,
#      with ENTRYPOINT ["/opt/ferrostack/tools/llama-server"]. The model is not in the image: the container
#      runtime bind-mounts the model path read-only. Needs scripts/setup-llm.sh to have run.
# stdout: only KEY=VALUE lines (DOCKER_HOST, CONTAINERS_CONF, FERROSTACK_TEST_IMAGE[, FERROSTACK_LLAMA_IMAGE]);
# progress goes to stderr. Exit status 1 with a reason when containers cannot run on this machine.
# Stop the service: kill "$(cat DIR/service.pid)".
set -euo pipefail

LLAMA=0
DIR=""
for arg in "$@"; do
    case "$arg" in
        --llama-image) LLAMA=1 ;;
        -h|--help) sed -n '2,27p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        -*) echo "setup-podman.sh: unknown option: $arg" >&2; exit 2 ;;
        *) DIR="$arg" ;;
    esac
done

log() { echo "setup-podman: $*" >&2; }
die() { echo "setup-podman: ERROR: $*" >&2; exit 1; }

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
DIR="${DIR:-$REPO/.cache/podman}"
mkdir -p "$DIR"
DIR="$(cd "$DIR" && pwd -P)"
SOCK="$DIR/podman.sock"
CONF="$DIR/containers.conf"
BUSYBOX_IMAGE=localhost/ferrostack-busybox:test
LLAMA_IMAGE=localhost/ferrostack-llama:test

exec 9>"$DIR/.setup.lock"
if command -v flock >/dev/null 2>&1; then flock 9; fi

# ---- 1. packages ---------------------------------------------------------------------------------
PKGS=(podman runc crun fuse-overlayfs slirp4netns uidmap busybox-static catatonit containernetworking-plugins)
if ! command -v podman >/dev/null 2>&1 || ! command -v runc >/dev/null 2>&1 || [[ ! -x /bin/busybox ]]; then
    command -v apt-get >/dev/null 2>&1 || die "podman is not installed and apt-get is not available"
    [[ "$(id -u)" == 0 ]] || die "podman is not installed; installing it needs root (apt-get)"
    log "installing ${PKGS[*]} ..."
    if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${PKGS[@]}" >"$DIR/apt.log" 2>&1; then
        log "apt-get install failed; retrying after apt-get update ..."
        DEBIAN_FRONTEND=noninteractive apt-get update -q >>"$DIR/apt.log" 2>&1 || true
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${PKGS[@]}" >>"$DIR/apt.log" 2>&1 \
            || die "apt-get install failed (see $DIR/apt.log)"
    fi
fi

# ---- 2. containers.conf --------------------------------------------------------------------------
CONF_TEXT='# Written by scripts/setup-podman.sh. Podman'"'"'s default nofile (1048576) is above this machine'"'"'s
# hard limit and crun cannot run in its cgroup setup: lower the ulimits and use runc.
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]
[engine]
runtime = "runc"'
if [[ ! -f "$CONF" || "$(cat "$CONF")" != "$CONF_TEXT" ]]; then
    printf '%s\n' "$CONF_TEXT" >"$CONF"
fi
export CONTAINERS_CONF="$CONF"

# ---- 3. the API service --------------------------------------------------------------------------
api_up() { curl -sf --max-time 2 --unix-socket "$SOCK" http://d/version >/dev/null 2>&1; }
if ! api_up; then
    if [[ -f "$DIR/service.pid" ]] && kill -0 "$(cat "$DIR/service.pid")" 2>/dev/null; then
        kill "$(cat "$DIR/service.pid")" 2>/dev/null || true
        sleep 0.2
    fi
    rm -f "$SOCK"
    log "starting podman system service on $SOCK ..."
    # fd 9 (the lock) must not leak into the long-lived service.
    nohup podman system service --time=0 "unix://$SOCK" >"$DIR/service.log" 2>&1 </dev/null 9>&- &
    echo $! >"$DIR/service.pid"
    for _ in $(seq 1 100); do
        api_up && break
        kill -0 "$(cat "$DIR/service.pid")" 2>/dev/null || die "podman system service exited: $(tail -5 "$DIR/service.log")"
        sleep 0.1
    done
    api_up || die "podman system service does not answer GET /version on $SOCK after 10 s"
fi

# ---- 4. busybox image + smoke test ---------------------------------------------------------------
[[ -x /bin/busybox ]] || die "/bin/busybox (busybox-static) is missing"
# A rootfs with busybox and its applets linked, plus the files podman and tools expect.
make_busybox_rootfs() {
    local root="$1"
    mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,etc,tmp,proc,sys,dev,run,var/tmp,root}
    chmod 1777 "$root/tmp" "$root/var/tmp"
    cp /bin/busybox "$root/bin/busybox"
    local applet
    for applet in $("$root/bin/busybox" --list); do
        [[ -e "$root/bin/$applet" ]] || ln -s busybox "$root/bin/$applet"
    done
    printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n' >"$root/etc/passwd"
    printf 'root:x:0:\nnogroup:x:65534:\n' >"$root/etc/group"
}
if ! podman image exists "$BUSYBOX_IMAGE"; then
    log "building $BUSYBOX_IMAGE (podman import of a busybox-static rootfs) ..."
    tmp="$(mktemp -d)"
    make_busybox_rootfs "$tmp/rootfs"
    tar -C "$tmp/rootfs" -cf "$tmp/rootfs.tar" .
    podman import -q --change 'CMD ["/bin/sh"]' "$tmp/rootfs.tar" "$BUSYBOX_IMAGE" >/dev/null \
        || { rm -rf "$tmp"; die "podman import failed"; }
    rm -rf "$tmp"
fi
SMOKE_STAMP="$DIR/.smoke-ok"
if [[ ! -f "$SMOKE_STAMP" ]]; then
    out="$(podman run --rm "$BUSYBOX_IMAGE" /bin/sh -c 'echo ferrostack-smoke-ok' 2>&1)" \
        || die "containers cannot run on this machine: podman run failed: $out"
    [[ "$out" == *ferrostack-smoke-ok* ]] || die "podman run gave unexpected output: $out"
    touch "$SMOKE_STAMP"
fi

# ---- 5. (optional) the llama-server image --------------------------------------------------------
if [[ "$LLAMA" == 1 ]] && ! podman image exists "$LLAMA_IMAGE"; then
    VENV="$REPO/.cache/venv-llm"
    [[ -x "$VENV/bin/python" ]] || die "$VENV is missing: run scripts/setup-llm.sh first"
    log "building $LLAMA_IMAGE (busybox + host python + .cache/venv-llm) ..."
    # The venv's python is a symlink to the host interpreter: keep that interpreter at the same path in the
    # image, with its standard library (minus tests, IDLE, tk, its own site-packages) and libpython.
    PY="$(readlink -f "$VENV/bin/python")"
    BASE="$("$VENV/bin/python" -c 'import sys; print(sys.base_prefix)')"
    PYVER="$("$VENV/bin/python" -c 'import sys; print("python%d.%d" % sys.version_info[:2])')"
    tmp="$(mktemp -d)"
    root="$tmp/rootfs"
    make_busybox_rootfs "$root"
    mkdir -p "$root$BASE/lib" "$root$(dirname "$PY")" "$root/opt/ferrostack/venv" "$root/opt/ferrostack/tools" \
        "$root/usr/local/bin"
    cp -a "$(dirname "$PY")"/python* "$root$(dirname "$PY")/"
    cp -a "$BASE/lib/"libpython* "$root$BASE/lib/"
    tar -C "$BASE/lib" --exclude="$PYVER/test" --exclude="$PYVER/site-packages" --exclude="$PYVER/idlelib" \
        --exclude="$PYVER/tkinter" --exclude="$PYVER/turtledemo" --exclude="$PYVER/ensurepip" \
        --exclude="$PYVER/config-*" -cf - "$PYVER" | tar -C "$root$BASE/lib" -xf -
    # The venv with xllamacpp (pip and setuptools are not needed to serve).
    tar -C "$VENV" --exclude="site-packages/pip" --exclude="site-packages/setuptools" \
        --exclude="site-packages/pip-*" --exclude="site-packages/setuptools-*" -cf - . \
        | tar -C "$root/opt/ferrostack/venv" -xf -
    cp -a "$REPO/tools/llama_server_shim.py" "$root/opt/ferrostack/tools/"
    # `llama-server` on PATH (busybox has no bash, so not tools/llama-server itself).
    printf '#!/bin/sh\nexec /opt/ferrostack/venv/bin/python /opt/ferrostack/tools/llama_server_shim.py "$@"\n' \
        >"$root/usr/local/bin/llama-server"
    chmod 755 "$root/usr/local/bin/llama-server"
    # Every shared library the interpreter and the venv's extension modules link (ldd), at the same paths,
    # plus the dynamic loader.
    libs="$( { ldd "$PY"; find "$VENV" "$BASE/lib/$PYVER/lib-dynload" -name '*.so*' -type f -exec ldd {} \; ; } \
        2>/dev/null | grep -o '/[^ ]*\.so[^ ]*' | sort -u)"
    for lib in $libs; do
        [[ -e "$lib" && ! -e "$root$lib" ]] || continue
        case "$lib" in "$BASE"/*|"$VENV"/*) continue ;; esac
        mkdir -p "$root$(dirname "$lib")"
        cp -L "$lib" "$root$lib"
    done
    # Debian's /lib is a symlink to /usr/lib: mirror that so both spellings resolve.
    for d in lib lib64; do
        if [[ -L "/$d" && -d "$root/$d" && ! -L "$root/$d" ]]; then
            target="$(readlink "/$d")"
            mkdir -p "$root/$target"
            cp -a "$root/$d/." "$root/$target/"
            rm -rf "${root:?}/$d"
            ln -s "$target" "$root/$d"
        fi
    done
    tar -C "$root" -cf "$tmp/rootfs.tar" .
    podman import -q --change 'ENTRYPOINT ["/usr/local/bin/llama-server"]' \
        --change 'ENV PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin' \
        "$tmp/rootfs.tar" "$LLAMA_IMAGE" >/dev/null || { rm -rf "$tmp"; die "podman import of $LLAMA_IMAGE failed"; }
    rm -rf "$tmp"
    out="$(podman run --rm "$LLAMA_IMAGE" --version 2>&1)" \
        || die "$LLAMA_IMAGE does not run: $out"
    log "$LLAMA_IMAGE: $(echo "$out" | tail -1)"
fi

# ---- result --------------------------------------------------------------------------------------
echo "DOCKER_HOST=unix://$SOCK"
echo "CONTAINERS_CONF=$CONF"
echo "FERROSTACK_TEST_IMAGE=$BUSYBOX_IMAGE"
if podman image exists "$LLAMA_IMAGE"; then echo "FERROSTACK_LLAMA_IMAGE=$LLAMA_IMAGE"; fi
