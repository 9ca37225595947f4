#!/usr/bin/env bash
# `make demo`: Asynq's "Redis Cluster" tutorial, end to end, on a local 6-node Redis Cluster.
#
#   1. start (or reuse) the dev cluster: 3 masters + 3 replicas on 127.0.0.1:$PORT_BASE..+5
#   2. start the tutorial worker in the background (log in $CLUSTER_DIR/tutorial-worker.log)
#   3. run the tutorial client: one task each into the notifications, webhooks and images queues
#   4. wait until the worker's log shows all three handlers ran
#   5. show `asynq-aio queue ls --cluster` (each queue's key slot and nodes)
#   6. stop the worker with SIGTERM; the cluster keeps running (`make cluster-down` stops it)
#
# Expects the venv (`make demo` creates it) and a redis-server binary (scripts/ensure-redis.sh).
set -euo pipefail

cd "$(dirname "$0")/.."

VENV=${VENV:-.venv}
CLUSTER_DIR=${CLUSTER_DIR:-.devcluster}
PORT_BASE=${PORT_BASE:-7000}
DEMO_TIMEOUT=${DEMO_TIMEOUT:-60}
BIN=$VENV/bin
CLI=$BIN/asynq-aio
WORKER_LOG=$CLUSTER_DIR/tutorial-worker.log
export PYTHONUNBUFFERED=1

step() { printf '\n==> %s\n' "$*"; }
die() { printf 'demo: error: %s\n' "$*" >&2; exit 1; }

[ -x "$CLI" ] || die "$CLI not found: run \`make demo\` (it creates $VENV) instead of this script"

# -- 1. the cluster -------------------------------------------------------------------------------
step "Starting a local Redis Cluster: 6 nodes on 127.0.0.1:$PORT_BASE-$((PORT_BASE + 5)), data in $CLUSTER_DIR"
echo "    \$ $CLI dev cluster up --dir $CLUSTER_DIR --port-base $PORT_BASE"
if ! up_out=$("$CLI" dev cluster up --dir "$CLUSTER_DIR" --port-base "$PORT_BASE"); then
  die "the cluster did not start (see above). If ports $PORT_BASE-$((PORT_BASE + 5)) or their bus ports" \
    "$((PORT_BASE + 10000))-$((PORT_BASE + 10005)) are taken, use others:" \
    "make cluster-down PURGE=1 && make demo PORT_BASE=$((PORT_BASE + 1000))"
fi
addrs_line=$(printf '%s\n' "$up_out" | grep '^ASYNQ_CLUSTER_ADDRS=' | tail -n1) ||
  die "\`dev cluster up\` printed no ASYNQ_CLUSTER_ADDRS line: $up_out"
export ASYNQ_CLUSTER_ADDRS=${addrs_line#ASYNQ_CLUSTER_ADDRS=}
echo "    $addrs_line"

# -- 2. the worker --------------------------------------------------------------------------------
step "Starting the tutorial worker in the background (log: $WORKER_LOG)"
worker_cmd=("$CLI" worker examples.tutorial_worker:mux --cluster-addrs "$ASYNQ_CLUSTER_ADDRS"
  --concurrency 20 --queue notifications=1 --queue webhooks=1 --queue images=1)
echo "    \$ asynq-aio worker examples.tutorial_worker:mux --cluster-addrs \$ASYNQ_CLUSTER_ADDRS \\"
echo "          --concurrency 20 --queue notifications=1 --queue webhooks=1 --queue images=1"
mkdir -p "$CLUSTER_DIR"
"${worker_cmd[@]}" >"$WORKER_LOG" 2>&1 &
worker_pid=$!

stop_worker() {
  # SIGTERM lets the server finish its handlers (shutdown_timeout, 8 s by default) and clear its
  # heartbeat; SIGKILL only if it has not exited after 20 s.
  if kill -0 "$worker_pid" 2>/dev/null; then
    kill -TERM "$worker_pid" 2>/dev/null || true
    for _ in $(seq 200); do
      kill -0 "$worker_pid" 2>/dev/null || break
      sleep 0.1
    done
    if kill -0 "$worker_pid" 2>/dev/null; then
      echo "demo: worker $worker_pid still running 20 s after SIGTERM; sending SIGKILL" >&2
      kill -KILL "$worker_pid" 2>/dev/null || true
    fi
  fi
  worker_status=0
  wait "$worker_pid" 2>/dev/null || worker_status=$?
}
trap stop_worker EXIT

# -- 3. the client --------------------------------------------------------------------------------
step "Enqueueing the tutorial's three tasks"
echo "    \$ python -m examples.tutorial_client"
"$BIN/python" -m examples.tutorial_client

# -- 4. wait for the handlers ---------------------------------------------------------------------
step "Waiting for the worker to run all three handlers (up to ${DEMO_TIMEOUT}s)"
markers=("Sending email to user" "Syncing webhook data" "Resizing image")
deadline=$((SECONDS + DEMO_TIMEOUT))
while :; do
  missing=()
  for m in "${markers[@]}"; do
    grep -qF "$m" "$WORKER_LOG" || missing+=("$m")
  done
  [ ${#missing[@]} -eq 0 ] && break
  if ! kill -0 "$worker_pid" 2>/dev/null; then
    echo "demo: the worker exited early; its log:" >&2
    cat "$WORKER_LOG" >&2
    exit 1
  fi
  if [ "$SECONDS" -ge "$deadline" ]; then
    echo "demo: after ${DEMO_TIMEOUT}s the worker log still lacks: $(printf '"%s" ' "${missing[@]}")- its log:" >&2
    cat "$WORKER_LOG" >&2
    exit 1
  fi
  sleep 0.2
done
echo "    worker log:"
sed 's/^/    | /' "$WORKER_LOG"

# -- 5. where the queues live ---------------------------------------------------------------------
step "Where each queue lives in the cluster"
echo "    \$ asynq-aio queue ls --cluster"
"$CLI" queue ls --cluster --cluster-addrs "$ASYNQ_CLUSTER_ADDRS"

# -- 6. stop the worker, keep the cluster ---------------------------------------------------------
step "Stopping the worker (SIGTERM)"
seen=$(wc -l <"$WORKER_LOG")
stop_worker
trap - EXIT
tail -n +"$((seen + 1))" "$WORKER_LOG" | sed 's/^/    | /'
echo "    worker exited with status $worker_status"

cat <<MSG

==> Done. The Redis Cluster is still running:
      export ASYNQ_CLUSTER_ADDRS=$ASYNQ_CLUSTER_ADDRS
      $CLI worker examples.tutorial_worker:mux --queue notifications=1 --queue webhooks=1 --queue images=1
      $BIN/python -m examples.tutorial_client
    Stop it with \`make cluster-down\` (keeps its data in $CLUSTER_DIR; \`make clean\` removes it).
MSG
