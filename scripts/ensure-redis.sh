#!/usr/bin/env bash
# Make sure a redis-server (or valkey-server) binary is on PATH, installing one when we can.
#
#   found on PATH            -> say which one and its version, exit 0
#   missing, apt-get exists,
#   and we are root or have
#   sudo                     -> apt-get update && apt-get install -y redis-server, exit 0
#   otherwise                -> print how to install it, exit 1
#
# Nothing else is changed. Used by `make demo`, `make test` and `make cluster-up`; the tests and
# `asynq-aio dev cluster up` start their own redis-server processes from this binary.
set -euo pipefail

say() { printf 'ensure-redis: %s\n' "$*"; }

found() {
  local bin
  for name in redis-server valkey-server; do
    if bin=$(command -v "$name" 2>/dev/null); then
      say "using $bin (version $("$bin" --version 2>/dev/null | sed -n 's/.* v=\([^ ]*\).*/\1/p'))"
      return 0
    fi
  done
  return 1
}

if found; then
  exit 0
fi

if command -v apt-get >/dev/null 2>&1; then
  sudo=()
  if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1 && { sudo -n true 2>/dev/null || [ -t 0 ]; }; then
      sudo=(sudo)
    else
      sudo=(none)
    fi
  fi
  if [ "${sudo[*]-}" != none ]; then
    say "redis-server is not on PATH; installing the Debian/Ubuntu package with apt-get"
    say "running: ${sudo[*]:+${sudo[*]} }apt-get update && apt-get install -y redis-server"
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends redis-server
    if found; then
      say "installed redis-server with apt-get (the package may also have started a system Redis on 6379;" \
        "asynq-aio does not need it: the tests and the dev cluster run their own processes)"
      exit 0
    fi
    say "apt-get finished but redis-server is still not on PATH" >&2
    exit 1
  fi
fi

cat >&2 <<'MSG'
ensure-redis: redis-server (or valkey-server) is not on PATH, and it cannot be installed from here
(installing needs apt-get and root or sudo). Install Redis 7 or newer, then run make again:
  Debian/Ubuntu:  sudo apt-get update && sudo apt-get install -y redis-server
  Fedora/RHEL:    sudo dnf install -y redis      (or valkey)
  Arch:           sudo pacman -S valkey
  macOS:          brew install redis
Only the binary is needed: no service has to run, and no Docker.
MSG
exit 1
