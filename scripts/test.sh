#!/usr/bin/env bash
# The whole test suite, on a fresh Debian machine as root: installs what the tests need,
# then checks formatting, lints and runs every test. `.ci/run` calls exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '\n==> %s\n' "$*"; }

need_root_for() {
  if [ "$(id -u)" != 0 ]; then
    echo "error: $1 needs root (run as root, or install it yourself first)" >&2
    exit 1
  fi
}

# Prerequisites: a Rust toolchain (rustup; the one thing not installed here), and
# Debian packages the tests use. protoc is vendored by the build (protoc-bin-vendored).
if ! command -v cargo >/dev/null 2>&1; then
  echo "error: cargo not found: install Rust first (https://rustup.rs), then run this again" >&2
  exit 1
fi
# promtool (package prometheus) lints the master's /metrics, systemd-analyze (package
# systemd) reads deploy/systemd/*.service, dig (package dnsutils) queries the master's
# DNS server, chromium and chromedriver (package chromium-driver), and firefox-esr, run
# the dashboard's browser tests (tests/dashboard.rs); the tests fail without them.
missing=()
for tool in curl procps:pgrep python3 prometheus:promtool systemd:systemd-analyze dnsutils:dig chromium:chromium chromium-driver:chromedriver firefox-esr:firefox-esr; do
  pkg=${tool%%:*}; bin=${tool##*:}
  command -v "$bin" >/dev/null 2>&1 || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  need_root_for "installing ${missing[*]}"
  log "installing ${missing[*]}"
  # No recommends: prometheus would bring prometheus-node-exporter, another service.
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
  # Only promtool is wanted: the Prometheus server the package starts is not.
  if [[ " ${missing[*]} " == *" prometheus "* ]] && [ -d /run/systemd/system ]; then
    systemctl disable --now prometheus >/dev/null 2>&1 || true
  fi
fi
rustup component list --installed 2>/dev/null | grep -q rustfmt || rustup component add rustfmt clippy 2>/dev/null || true
# Firefox's WebDriver, geckodriver, is not a Debian package: Mozilla publishes it on
# crates.io, so it is built from there (a pinned version, its own lock file).
if ! [ -x /usr/local/bin/geckodriver ]; then
  need_root_for "installing geckodriver into /usr/local"
  log "installing geckodriver (cargo install geckodriver into /usr/local)"
  CARGO_INCREMENTAL=0 cargo install --quiet geckodriver --version 0.37.1 --locked --root /usr/local
fi

# The Docker tests run on the real engine: install docker.io and busybox-static when
# missing, start dockerd when none answers, build the local test image. Fails loudly
# when the engine does not come up (the Docker tests never skip).
log "docker engine and test image"
bash scripts/docker-setup.sh

export CARGO_TERM_COLOR=never
# A clean checkout gains nothing from incremental compilation, and its caches double
# the target dir's size on disk.
export CARGO_INCREMENTAL=${CARGO_INCREMENTAL:-0}
log "cargo fmt --check"
cargo fmt --all -- --check

log "cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

log "cargo build (binaries the cluster tests start)"
cargo build --workspace --bins --examples --locked

log "cargo test"
out=$(mktemp)
trap 'rm -f "$out"' EXIT
cargo test --workspace --locked -- --test-threads 2 2>&1 | tee "$out"
# One closing line for the whole run (cargo prints one per test binary).
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($i ~ /^passed/) p += $(i-1); if ($i ~ /^failed/) f += $(i-1); if ($i ~ /^ignored/) s += $(i-1) } }
     END { printf "\ntests: %d passed, %d failed, %d skipped\n", p, f, s }' "$out"
