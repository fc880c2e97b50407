#!/usr/bin/env bash
# The Raspberry Pi path, proven under emulation: the device install in an arm64 Debian
# bookworm root (debootstrap + qemu-user-static), checked against this x86-64 host.
#
#   tests/arm64/run.sh --broker-port PORT [--bundles DIR] [--work DIR]
#
# 1. Builds (or reuses) the arm64 root: debootstrap --foreign + second stage, Python, and the
#    device dependencies from arm64 wheels that pip downloads here, pinned to this host's
#    versions. Cached under $EDGE_AIGC_ARM64_CACHE (default ~/.cache/edge-aigc-arm64), keyed
#    by the dependency set, so a re-run only reinstalls edge-aigc itself.
# 2. Runs tests/arm64/generate.py on every bundle (the rpi5 zoo bundles, plus --bundles)
#    inside the root and on the host, and compares (compare.py): identical greedy tokens,
#    images and audio within the int8 fidelity gates.
# 3. Runs `edge-aigc serve` inside the root against the Mosquitto on 127.0.0.1:PORT (the
#    chroot shares the host's network) and makes one round trip per task with `edge-aigc send`.
# Every mount it makes is undone on exit, failure included. Needs root, debootstrap,
# qemu-user-static and binfmt-support (Debian packages).
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
PYTHON=${PYTHON:-python3}
SUITE=bookworm
PROFILE=rpi5
BROKER_PORT="" EXTRA_BUNDLES="" WORK=""
while [ $# -gt 0 ]; do
    case "$1" in
        --broker-port) BROKER_PORT=$2; shift 2 ;;
        --bundles) EXTRA_BUNDLES=$2; shift 2 ;;
        --work) WORK=$2; shift 2 ;;
        *) echo "run.sh: unknown option $1" >&2; exit 2 ;;
    esac
done
[ -n "$BROKER_PORT" ] || { echo "run.sh: --broker-port is required" >&2; exit 2; }
say() { printf '[arm64 %s] %s\n' "$(date +%H:%M:%S)" "$*"; }

# -- preconditions ------------------------------------------------------------------------
[ "$(id -u)" -eq 0 ] || { echo "run.sh: needs root (debootstrap, chroot, mount)" >&2; exit 2; }
for tool in debootstrap chroot mount; do
    command -v "$tool" >/dev/null || { echo "run.sh: $tool is missing: apt-get install debootstrap qemu-user-static binfmt-support" >&2; exit 2; }
done
if [ ! -e /proc/sys/fs/binfmt_misc/status ]; then
    mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
fi
if [ ! -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ]; then
    update-binfmts --enable qemu-aarch64 || { echo "run.sh: no qemu-aarch64 binfmt handler: apt-get install qemu-user-static binfmt-support" >&2; exit 2; }
fi
grep -q '^flags:.*F' /proc/sys/fs/binfmt_misc/qemu-aarch64 \
    || { echo "run.sh: the qemu-aarch64 binfmt handler lacks the F flag, so it cannot run inside a chroot" >&2; exit 2; }

# -- the dependency set and its cache key --------------------------------------------------
DEPS=$("$PYTHON" - <<'EOF'
from importlib.metadata import version
for name in ("onnxruntime", "numpy", "pillow", "paho-mqtt", "tokenizers", "cryptography", "jinja2", "markupsafe",
             "ai-edge-litert"):
    print(f"{name}=={version(name)}")
EOF
)
MIRROR=$(awk '/^URIs:/ && /debian$/ {print $2; exit} /^deb / && /debian/ {print $2; exit}' \
    /etc/apt/sources.list.d/*.sources /etc/apt/sources.list 2>/dev/null || true)
MIRROR=${MIRROR:-http://deb.debian.org/debian}
PACKAGES="python3,python3-venv,libgomp1,ca-certificates"
BUILD=1  # bump when build_root changes what it makes
KEY=$(printf '%s\n' "$BUILD" "$SUITE" "$PACKAGES" "$DEPS" | sha256sum | cut -c1-16)
CACHE=${EDGE_AIGC_ARM64_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/edge-aigc-arm64}
ROOT=$CACHE/$KEY/root
WHEELS=$CACHE/$KEY/wheels
VENV=/opt/edge-aigc

MOUNTS=()
cleanup() {
    local status=$?
    [ -n "${SERVE_PID:-}" ] && kill -TERM "$SERVE_PID" 2>/dev/null && wait "$SERVE_PID" 2>/dev/null
    for ((i = ${#MOUNTS[@]} - 1; i >= 0; i--)); do
        umount "${MOUNTS[$i]}" 2>/dev/null || umount -l "${MOUNTS[$i]}" 2>/dev/null || true
    done
    exit $status
}
trap cleanup EXIT INT TERM

mount_in() {  # mount_in ROOT: /proc, a Cortex-A76 cpuinfo over it, and the work dir at /work
    local root=$1
    mount -t proc proc "$root/proc"; MOUNTS+=("$root/proc")
    # With the host's /proc/cpuinfo, `import onnxruntime` crashed under QEMU 7.2; with this
    # one the Arm kernels see the Pi 5's features (asimddp for int8).
    mount --bind "$HERE/cpuinfo-cortex-a76" "$root/proc/cpuinfo"; MOUNTS+=("$root/proc/cpuinfo")
    mkdir -p "$root/work"
    mount --bind "$WORK" "$root/work"; MOUNTS+=("$root/work")
}

# A clean environment (no host PIP_* settings) and a Cortex-A76: QEMU's default CPU advertises
# SVE/i8mm, and ONNX Runtime then returned a wrong int8 result.
IN_ROOT=(/usr/bin/env -i PATH="$VENV/bin:/usr/sbin:/usr/bin:/sbin:/bin" HOME=/root LANG=C.UTF-8
         QEMU_CPU=cortex-a76)
in_root() { chroot "$ROOT" "${IN_ROOT[@]}" "$@"; }

build_root() {
    local tmp=$CACHE/$KEY/root.partial
    rm -rf "$tmp" "$WHEELS"
    mkdir -p "$tmp" "$WHEELS"
    say "arm64 wheels for: $(echo $DEPS)"
    # pip takes only the platform tags it is given: list every glibc up to bookworm's 2.36
    local tags=() v
    for v in 17 24 27 28 31 34 35 36; do tags+=(--platform "manylinux_2_${v}_aarch64"); done
    PIP_FIND_LINKS="" "$PYTHON" -m pip download --quiet --dest "$WHEELS" --only-binary=:all: \
        --python-version 3.11 --platform manylinux2014_aarch64 "${tags[@]}" $DEPS
    say "debootstrap $SUITE arm64 from $MIRROR (first stage)"
    debootstrap --arch=arm64 --foreign --variant=minbase --include="$PACKAGES" "$SUITE" "$tmp" "$MIRROR" >/dev/null
    say "debootstrap second stage, emulated (several minutes)"
    ROOT=$tmp in_root /debootstrap/debootstrap --second-stage >/dev/null
    say "Python venv and the device dependencies, emulated"
    mkdir -p "$tmp/wheels" && cp "$WHEELS"/*.whl "$tmp/wheels/"
    ROOT=$tmp in_root python3 -m venv "$VENV"
    ROOT=$tmp in_root "$VENV/bin/pip" install --quiet --no-index --find-links /wheels $DEPS
    rm -rf "$tmp/wheels"
    mv "$tmp" "$ROOT"
}

# -- 1. the root ---------------------------------------------------------------------------
if [ -x "$ROOT$VENV/bin/python" ]; then
    say "reusing the arm64 root $ROOT"
else
    build_root
fi
WORK=${WORK:-$(mktemp -d /tmp/edge-aigc-arm64.XXXXXX)}
mkdir -p "$WORK/bundles" "$WORK/x86" "$WORK/arm64" "$WORK/dist"
say "work dir $WORK"
cp "$REPO"/edge_aigc/zoo/*-"$PROFILE".eaigc "$WORK/bundles/"
[ -n "$EXTRA_BUNDLES" ] && cp "$EXTRA_BUNDLES"/*.eaigc "$WORK/bundles/"
cp "$HERE/generate.py" "$WORK/"
"$PYTHON" -m pip wheel --quiet --no-deps --no-build-isolation --wheel-dir "$WORK/dist" "$REPO" >/dev/null
mount_in "$ROOT"
say "installing edge-aigc into the root"
wheel=$(cd "$WORK/dist" && ls edge_aigc-*.whl)
in_root "$VENV/bin/pip" install --quiet --no-index --no-deps --force-reinstall "/work/dist/$wheel"
in_root python3 -c 'import platform, onnxruntime, edge_aigc; print("arm64 root:", platform.machine(), "onnxruntime", onnxruntime.__version__, "edge-aigc", edge_aigc.__version__)'

# -- 2. offline generation, compared with this host ------------------------------------------
say "generating on x86-64"
"$PYTHON" "$WORK/generate.py" "$WORK/bundles" "$WORK/x86" --profile "$PROFILE"
say "generating on emulated arm64 (Cortex-A76)"
in_root python3 /work/generate.py /work/bundles /work/arm64 --profile "$PROFILE"
say "comparing"
(cd "$REPO" && "$PYTHON" "$HERE/compare.py" "$WORK/x86" "$WORK/arm64")

# -- 3. the MQTT service in the root, driven from the host ------------------------------------
models=$(cd "$WORK/bundles" && for b in *.eaigc; do printf '"/work/bundles/%s", ' "$b"; done)
cat > "$WORK/device.toml" <<EOF
device_id = "arm64-pi"
profile = "$PROFILE"
models = [${models%, }]
state_dir = "/work/state"
# the zoo bundles are signed; the TFLite one the test converts is not
allow_unsigned = true

[mqtt]
url = "mqtt://127.0.0.1:$BROKER_PORT"
EOF
say "edge-aigc serve in the root, broker 127.0.0.1:$BROKER_PORT"
# One command in the background, stopped by its PID: chroot execs the emulated service.
chroot "$ROOT" "${IN_ROOT[@]}" "$VENV/bin/edge-aigc" serve --config /work/device.toml &
SERVE_PID=$!
send() { "$PYTHON" -m edge_aigc send arm64-pi "$@" --broker "mqtt://127.0.0.1:$BROKER_PORT" --timeout 600; }
# A request sent before the service subscribes is lost (its first session is new), so wait
# until it answers a status request, as a deploy script would.
for try in $(seq 1 60); do
    "$PYTHON" -m edge_aigc send arm64-pi status --broker "mqtt://127.0.0.1:$BROKER_PORT" --timeout 5 \
        >/dev/null 2>&1 && break
    kill -0 "$SERVE_PID" 2>/dev/null || { echo "run.sh: the service exited while starting" >&2; exit 1; }
    [ "$try" -lt 60 ] || { echo "run.sh: the service did not answer within 5 minutes" >&2; exit 1; }
done
say "service online"
for b in "$WORK"/bundles/*.eaigc; do
    name=$("$PYTHON" -m edge_aigc inspect "$b" --json | "$PYTHON" -c 'import json,sys; print(json.load(sys.stdin)["name"])')
    task=$("$PYTHON" -m edge_aigc inspect "$b" --json | "$PYTHON" -c 'import json,sys; print(json.load(sys.stdin)["task"])')
    case "$task" in
        text-generation) send generate --model "$name" --prompt "You will" --max-new-tokens 16 ;;
        image-generation) send generate --model "$name" --count 4 --seed 1 -o "$WORK/mqtt-$name.png" ;;
        audio-generation) send generate --model "$name" --notes "A4:0.5 C5:0.5" -o "$WORK/mqtt-$name.wav" ;;
    esac
    say "MQTT round trip ok: $name ($task)"
done
kill -TERM "$SERVE_PID"
wait "$SERVE_PID" && status=0 || status=$?
SERVE_PID=""
[ "$status" -eq 0 ] || { echo "run.sh: the service exited $status on SIGTERM" >&2; exit 1; }
say "service drained and exited 0"
say "PASS"
