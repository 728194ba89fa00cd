#!/usr/bin/env bash
# Makes the Docker engine ready for Strata's Docker tests and benchmark, on a fresh
# Debian machine as root: installs Debian's docker.io and busybox-static when missing,
# starts dockerd when none answers (in the background, under setsid, logging to
# $STRATA_DOCKERD_LOG), and builds the local test image with `docker import` from a
# tarball of /bin/busybox and its applet links (no registry is needed).
#
#   scripts/docker-setup.sh            # idempotent; scripts/test.sh calls it
#   STRATA_TEST_IMAGE=...              # the tag to build (default strata-test/busybox:latest)
#
# Fails loudly (exit 1) when the engine does not come up.
set -euo pipefail

IMAGE=${STRATA_TEST_IMAGE:-strata-test/busybox:latest}
LOG=${STRATA_DOCKERD_LOG:-/tmp/strata-dockerd.log}

say() { printf '==> docker-setup: %s\n' "$*"; }
die() { printf 'error: docker-setup: %s\n' "$*" >&2; exit 1; }

missing=()
command -v dockerd >/dev/null 2>&1 || missing+=(docker.io)
# The image holds nothing but busybox, so it must be the statically linked one.
dpkg -s busybox-static >/dev/null 2>&1 || missing+=(busybox-static)
if [ ${#missing[@]} -gt 0 ]; then
  [ "$(id -u)" = 0 ] || die "installing ${missing[*]} needs root (run as root, or install them first)"
  say "installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
command -v docker >/dev/null 2>&1 || die "the docker client is missing after installing docker.io"

if ! docker info >/dev/null 2>&1; then
  [ "$(id -u)" = 0 ] || die "dockerd is not running and starting it needs root"
  if pgrep -x dockerd >/dev/null 2>&1; then
    say "dockerd runs but does not answer yet; waiting"
  else
    say "starting dockerd (log: $LOG)"
    setsid dockerd >"$LOG" 2>&1 </dev/null &
  fi
  for _ in $(seq 1 60); do
    docker info >/dev/null 2>&1 && break
    sleep 1
  done
  if ! docker info >/dev/null 2>&1; then
    tail -n 30 "$LOG" >&2 2>/dev/null || true
    die "dockerd did not come up within 60 s (see $LOG)"
  fi
fi
say "engine $(docker version --format '{{.Server.Version}} (API {{.Server.APIVersion}})' 2>/dev/null || echo '?') answers"

if ! docker image inspect "$IMAGE" >/dev/null 2>&1; then
  say "building $IMAGE from /bin/busybox"
  root=$(mktemp -d)
  trap 'rm -rf "$root"' EXIT
  mkdir -p "$root/bin" "$root/tmp" "$root/etc" "$root/www" "$root/mnt/sandbox"
  cp /bin/busybox "$root/bin/busybox"
  for applet in $(/bin/busybox --list); do
    [ "$applet" = busybox ] || ln -sf busybox "$root/bin/$applet"
  done
  echo 'root:x:0:0:root:/root:/bin/sh' >"$root/etc/passwd"
  echo 'root:x:0:' >"$root/etc/group"
  chmod 1777 "$root/tmp"
  tar -C "$root" -cf - . | docker import \
    --change 'ENV PATH=/bin' --change 'CMD ["/bin/sh"]' - "$IMAGE" >/dev/null
  docker image inspect "$IMAGE" >/dev/null 2>&1 || die "docker import did not produce $IMAGE"
fi
say "test image $IMAGE is ready"
