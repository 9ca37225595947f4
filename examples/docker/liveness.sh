#!/bin/sh
# Liveness check for a container that runs one `asynq-aio worker`: fails only when Redis answers
# and this host's server is not among the live servers, i.e. its heartbeat (written every 5 s,
# kept 10 s) stopped: the event loop is stuck or the worker stopped serving. When Redis cannot be
# reached, a restart would not help, so that counts as alive. Reads the same ASYNQ_* variables as
# the worker. The host is what the worker publishes: the hostname (the pod name in Kubernetes).
out=$(asynq-aio server ls --json) || exit 0
host=${HOSTNAME:-$(uname -n)}
printf '%s\n' "$out" | grep -qF "\"host\": \"$host\""
