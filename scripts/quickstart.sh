#!/usr/bin/env bash
# Quick start: builds Strata, brings up a local cluster (a master and two agents on
# this machine) and runs the `hello` example scheduler against it. The cluster keeps
# running until Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."

MASTER=${STRATA_MASTER:-127.0.0.1:5050}
WORK=${STRATA_WORK_DIR:-/tmp/strata-local}
TASKS=${HELLO_TASKS:-10}

if ! command -v cargo >/dev/null 2>&1; then
  echo "error: cargo not found: install Rust first (https://rustup.rs)" >&2
  exit 1
fi
echo "==> building (release)"
cargo build --release --quiet --workspace --bins --examples

mkdir -p "$WORK"
echo "==> starting the local cluster: master on $MASTER, two agents (logs: $WORK/local.log)"
./target/release/strata local --master "$MASTER" --work-dir "$WORK" >"$WORK/local.log" 2>&1 &
LOCAL_PID=$!
trap 'echo; echo "==> stopping the local cluster"; kill $LOCAL_PID 2>/dev/null; wait $LOCAL_PID 2>/dev/null; exit 0' INT TERM

for _ in $(seq 1 100); do
  if curl -fsS "http://$MASTER/health" >/dev/null 2>&1 &&
     [ "$(curl -fsS "http://$MASTER/state" | grep -o '"status":"ACTIVE"' | wc -l)" -ge 2 ]; then
    break
  fi
  if ! kill -0 $LOCAL_PID 2>/dev/null; then
    echo "error: the local cluster exited; its log:" >&2; cat "$WORK/local.log" >&2; exit 1
  fi
  sleep 0.2
done

echo "==> running the hello scheduler: $TASKS tasks"
./target/release/examples/hello --master "$MASTER" --tasks "$TASKS"

echo
echo "==> the cluster is up. Try:"
echo "    curl -s http://$MASTER/state | python3 -m json.tool | less"
echo "    ./target/release/strata run --master $MASTER -- echo hello from strata"
echo "    press Ctrl-C here to stop the cluster"
wait $LOCAL_PID
