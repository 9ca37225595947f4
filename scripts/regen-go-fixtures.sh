#!/usr/bin/env bash
# Re-record the Go Asynq v0.26.0 golden fixtures (tasks.json, stats.json, servers.json) with the real
# Go Asynq, built from tests/go/go.mod + go.sum through the module proxy, against a throw-away
# redis-server this script starts and stops itself.
#
#   scripts/regen-go-fixtures.sh [OUT_DIR]   record into OUT_DIR (default: a new temp dir)
#   scripts/regen-go-fixtures.sh --write     overwrite tests/fixtures/asynq-go-0.26/ instead
#
# cli.txt and cli.json are left alone: they need Go's CLI (github.com/hibiken/asynq/tools), which
# the module proxy does not serve. Needs go and redis-server on PATH; takes about 30 s.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
fixtures="$root/tests/fixtures/asynq-go-0.26"

out=""
case "${1:-}" in
  --write) out="$fixtures" ;;
  -h | --help) sed -n '2,10p' "$0"; exit 0 ;;
  "") out="$(mktemp -d "${TMPDIR:-/tmp}/asynq-go-fixtures.XXXXXX")" ;;
  -*) echo "regen-go-fixtures: unknown option $1" >&2; exit 2 ;;
  *) out="$1" ;;
esac
mkdir -p "$out"

for tool in go redis-server; do
  command -v "$tool" >/dev/null || { echo "regen-go-fixtures: $tool is not on PATH" >&2; exit 2; }
done

work="$(mktemp -d "${TMPDIR:-/tmp}/asynq-go-record.XXXXXX")"
redis_pid=""
cleanup() {
  if [[ -n "$redis_pid" ]] && kill -0 "$redis_pid" 2>/dev/null; then
    kill "$redis_pid" 2>/dev/null || true
    wait "$redis_pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

(cd "$root/tests/go" && go build -buildvcs=false -o "$work/record" ./record)

# A free port: ask the kernel for one, then give it to redis-server.
port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no --dir "$work" \
  --logfile "$work/redis.log" &
redis_pid=$!
for _ in $(seq 1 100); do
  if redis-cli -p "$port" ping >/dev/null 2>&1; then break; fi
  sleep 0.05
done
redis-cli -p "$port" ping >/dev/null

"$work/record" --redis "127.0.0.1:$port" --out "$out"
echo "$out"
