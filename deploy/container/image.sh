#!/usr/bin/env bash
# Build, smoke-test and run talkline's container image with podman (or docker).
#   image.sh build   build localhost/talkline:latest
#   image.sh test    build, start it, speak a sentence through it, stop it
#   image.sh up      build, start compose.yaml's stack, wait until it answers on /ready
#   image.sh down    stop the stack (each replica drains first)
#   image.sh stack-test  up, talk through HAProxy, kill the serving replica, resume, down
# Settings (environment): IMAGE, BASE_IMAGE (default: Debian's bookworm-slim from the
# registry, or one made here with debootstrap when the registry is out of reach).
set -euo pipefail
cd "$(dirname "$0")/../.."
HERE=deploy/container
IMAGE=${IMAGE:-localhost/talkline:latest}
LOCAL_BASE=localhost/debian:bookworm-slim
REGISTRY_BASE=docker.io/library/debian:bookworm-slim
PYTHON=${PYTHON:-.venv/bin/python}

log() { echo "image.sh: $*" >&2; }

# Without systemd (a sandbox, a CI runner) podman needs runc and cgroupfs.
if [ ! -d /run/systemd/system ] && [ -z "${CONTAINERS_CONF:-}" ]; then
    export CONTAINERS_CONF=$PWD/$HERE/containers.conf
fi

engine() {
    if command -v podman >/dev/null; then
        echo podman
    elif command -v docker >/dev/null && docker info >/dev/null 2>&1; then
        echo docker
    else
        log "no container engine: install podman (apt-get install podman iptables runc)"
        exit 2
    fi
}

install_podman() {
    command -v podman >/dev/null && return
    log "installing podman (Debian packages podman iptables runc debootstrap)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq podman iptables runc debootstrap >/dev/null
}

# The Debian mirror this machine's apt uses, for debootstrap: from the files apt reads
# (*.list, *.sources; not a "….disabled" copy of a third-party repository's).
mirror() {
    local uri
    uri=$(grep -hoE '^(URIs:|deb) +https?://[^ ]+' /etc/apt/sources.list \
        /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources 2>/dev/null \
        | grep -v security | head -n1 | awk '{print $2}')
    echo "${uri:-http://deb.debian.org/debian}"
}

base_image() {
    local run=$1
    if [ -n "${BASE_IMAGE:-}" ]; then echo "$BASE_IMAGE"; return; fi
    if $run image exists "$LOCAL_BASE" 2>/dev/null; then echo "$LOCAL_BASE"; return; fi
    if timeout 60 "$run" pull -q "$REGISTRY_BASE" >/dev/null 2>&1; then echo "$REGISTRY_BASE"; return; fi
    log "registry out of reach: making $LOCAL_BASE with debootstrap from $(mirror)"
    command -v debootstrap >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
    local root
    root=$(mktemp -d)
    debootstrap --variant=minbase bookworm "$root" "$(mirror)" >/dev/null
    [ -x "$root/bin/sh" ] || { log "debootstrap from $(mirror) made no usable system"; exit 1; }
    rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
    tar --numeric-owner -C "$root" -c . | "$run" import -q - "$LOCAL_BASE" >/dev/null
    rm -rf "$root"
    echo "$LOCAL_BASE"
}

build() {
    install_podman
    local run base secret=()
    run=$(engine)
    base=$(base_image "$run")
    # Certificate authorities this host trusts beyond the usual ones (a proxy's) reach pip
    # as a build secret: mounted for the install step only, never stored in a layer.
    if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
        secret=(--secret "id=ca,src=/etc/ssl/certs/ca-certificates.crt")
    fi
    local format=()
    [ "$run" = podman ] && format=(--format docker)  # keeps HEALTHCHECK and STOPSIGNAL
    log "building $IMAGE on $base with $run"
    "$run" build "${format[@]}" "${secret[@]}" --build-arg "BASE_IMAGE=$base" -t "$IMAGE" .
    "$run" image inspect "$IMAGE" --format '{{.Size}}' | awk '{printf "image.sh: %s is %.0f MB\n", "'"$IMAGE"'", $1/1e6}' >&2
}

smoke_test() {
    build
    local run name port
    run=$(engine)
    name=talkline-smoke-$$
    port=$("$PYTHON" -c 'from talkline.processes import free_port; print(free_port())')
    # podman runs health checks through systemd timers, which this host may not have.
    local nohc=()
    [ "$run" = podman ] && nohc=(--no-healthcheck)
    "$run" run -d --rm --name "$name" "${nohc[@]}" -p "127.0.0.1:$port:5000" "$IMAGE" >/dev/null
    trap '"$run" stop -t 45 "$name" >/dev/null 2>&1 || true' EXIT
    "$PYTHON" "$HERE/smoke.py" "http://127.0.0.1:$port"
    log "stopping (SIGTERM, drain)"
    "$run" stop -t 45 "$name" >/dev/null
    trap - EXIT
}

compose() {
    if [ "$(engine)" = podman ]; then
        "${COMPOSE:-$(dirname "$PYTHON")/podman-compose}" "$@"
    else
        docker compose "$@"
    fi
}

publish_port() {
    local port
    port=$(grep -sE '^TALKLINE_PUBLISH=' .env | tail -n1 | cut -d= -f2)
    echo "${TALKLINE_PUBLISH:-${port:-8000}}"
}

up() {
    build
    BASE_IMAGE=$(base_image "$(engine)")
    export BASE_IMAGE
    compose build redis haproxy >/dev/null
    compose up -d
    local url deadline
    url="http://127.0.0.1:$(publish_port)"
    deadline=$((SECONDS + 240))
    log "waiting for $url/ready"
    until curl -fsS "$url/ready" >/dev/null 2>&1; do
        if [ $SECONDS -gt $deadline ]; then
            log "the stack did not become ready; its logs:"
            compose logs --tail 20 >&2 || true
            exit 1
        fi
        sleep 2
    done
    log "ready: $url (the web page), $url/ws"
}

down() {
    compose down -t 45
}

stack_test() {
    up
    local status=0
    "$PYTHON" "$HERE/stack_smoke.py" "http://127.0.0.1:$(publish_port)" "$(engine)" || status=$?
    down
    return $status
}

case "${1:-}" in
    build) build ;;
    test) smoke_test ;;
    up) up ;;
    down) down ;;
    stack-test) stack_test ;;
    *) echo "usage: $0 build|test|up|down|stack-test" >&2; exit 2 ;;
esac
