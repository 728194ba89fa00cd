#!/usr/bin/env bash
# Quick start: builds Strata, brings up a local cluster (a master, two agents and the
# container framework on this machine) and deploys the example app
# examples/apps/hello.yaml on it. The cluster keeps running until Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."

MASTER=${STRATA_MASTER:-127.0.0.1:5050}
WORK=${STRATA_WORK_DIR:-/tmp/strata-local}
APPS=${STRATA_SERVER:-127.0.0.1:8080}
export STRATA_SERVER=$APPS STRATA_MASTER=$MASTER

if ! command -v cargo >/dev/null 2>&1; then
  echo "error: cargo not found: install Rust first (https://rustup.rs)" >&2
  exit 1
fi
echo "==> building (release)"
cargo build --release --quiet --workspace --bins --examples

mkdir -p "$WORK"
echo "==> starting the local cluster: master on $MASTER, two agents, App API on $APPS (logs: $WORK/local.log)"
./target/release/strata local --master "$MASTER" --apps-listen "$APPS" --work-dir "$WORK" >"$WORK/local.log" 2>&1 &
LOCAL_PID=$!
stop_cluster() { kill $LOCAL_PID 2>/dev/null; wait $LOCAL_PID 2>/dev/null; }
trap 'echo; echo "==> stopping the local cluster"; stop_cluster; exit 0' INT TERM
# A step that fails stops the cluster too: nothing is left running behind an error.
trap 'rc=$?; if [ $rc -ne 0 ]; then echo "error: the quick start failed; stopping the local cluster (its log: $WORK/local.log)" >&2; stop_cluster; fi' EXIT

# `strata local` is secure: TLS with its own cluster CA, and an admin credential (the
# secret in $WORK/admin.secret). It writes the CLI's config, so `strata` needs no flags.
CA=$WORK/master/tls/ca.crt
APPS_PORT=${APPS##*:}
ready=0
for _ in $(seq 1 150); do
  if [ -f "$CA" ] && [ -f "$WORK/admin.secret" ] &&
     curl -fsS --cacert "$CA" "https://$MASTER/health" >/dev/null 2>&1 &&
     [ "$(curl -fsS --cacert "$CA" -u "admin:$(cat "$WORK/admin.secret")" "https://$MASTER/state" | grep -o '"status":"ACTIVE"' | wc -l)" -ge 2 ] &&
     curl -fsS --cacert "$CA" -u "admin:$(cat "$WORK/admin.secret")" \
       --resolve "strata-apps:$APPS_PORT:${APPS%:*}" "https://strata-apps:$APPS_PORT/v1/info" 2>/dev/null |
       grep -q '"connected":true'; then
    ready=1
    break
  fi
  if ! kill -0 $LOCAL_PID 2>/dev/null; then
    echo "error: the local cluster exited; its log:" >&2; cat "$WORK/local.log" >&2; exit 1
  fi
  sleep 0.2
done
if [ $ready = 0 ]; then
  echo "error: the local cluster did not come up within 30 s; the end of its log:" >&2
  tail -20 "$WORK/local.log" >&2
  exit 1
fi

S=./target/release/strata
echo "==> deploying examples/apps/hello.yaml"
$S app deploy -f examples/apps/hello.yaml --wait
echo
$S app list
echo
$S task list
FIRST=$($S task list -o json | grep -o '"id": *"[^"]*"' | head -1 | sed 's/.*"\([^"]*\)"$/\1/')
sleep 1
echo
echo "==> the output of $FIRST"
$S task logs "$FIRST" | tail -3

echo
echo "==> the cluster is up, with the app 'hello' running. Try:"
echo "    $S app show hello                  # its spec, tasks, health"
echo "    $S task logs --follow $FIRST"
echo "    $S app scale hello 4 --wait"
echo "    $S agent list; $S framework list"
echo "    curl --cacert $CA -u \"admin:\$(cat $WORK/admin.secret)\" https://$MASTER/state   # the HTTP API"
echo "    $S run -- echo hello from strata   # one task, its output and exit status"
echo "    ./target/release/examples/hello --master $MASTER --tasks 10 --ca-file $CA --credential-file $WORK/admin-credential.json   # a scheduler written with the SDK"
echo "    press Ctrl-C here to stop the cluster"
wait $LOCAL_PID
