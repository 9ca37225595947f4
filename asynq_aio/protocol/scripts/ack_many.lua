-- Many handlers of one queue succeeded: the same writes as ack.lua, for a batch, in one call.
-- One call per batch instead of one per task: Redis runs one script instead of dozens, and the
-- client packs and parses one command. Each task is still checked on its own (a task no longer
-- active is skipped), so a re-sent batch changes nothing.
-- KEYS[1] active  KEYS[2] lease  KEYS[3] completed  KEYS[4] processed total  KEYS[5] processed today
-- then per task, in order: its hash, and its unique lock when ARGV says it has one
-- ARGV[1] expire-at for today's counter (unix s)
-- then per task 5 values: id, msg with completed_at ("" = delete), completed zset score, has lock (0/1),
-- attempt token from the dequeue ("" = no check)
-- Returns one 1 (acked) or 0 (no-op: not active any more, or another attempt owns it) per task.
local n = (#ARGV - 1) / 5
local live = {}
local k = 6
local keyat = {}
for i = 1, n do
  local a = 1 + (i - 1) * 5
  keyat[i] = k
  if ARGV[a + 4] == "1" then
    k = k + 2
  else
    k = k + 1
  end
end
-- the lease is the test of "still active" (ZREM returns 0 for a task already acked, recovered by
-- another server, or named twice in this batch), the token the test of "still this attempt's"
local acked = 0
for i = 1, n do
  local a = 1 + (i - 1) * 5
  local id = ARGV[a + 1]
  local token = ARGV[a + 5]
  if token ~= "" and redis.call("HGET", KEYS[keyat[i]], "aio_attempt") ~= token then
    live[i] = 0
  else
    live[i] = redis.call("ZREM", KEYS[2], id)
  end
  if live[i] == 1 then
    local hkey = KEYS[keyat[i]]
    redis.call("LREM", KEYS[1], 0, id)
    if redis.call("HEXISTS", hkey, "aio_waiter") == 1 then -- see ack.lua
      redis.call("PUBLISH", "asynq-aio:done", hkey)
    end
    if ARGV[a + 2] == "" then
      redis.call("DEL", hkey)
    else
      redis.call("HSET", hkey, "msg", ARGV[a + 2], "state", "completed")
      redis.call("HDEL", hkey, "aio_attempt")
      redis.call("ZADD", KEYS[3], ARGV[a + 3], id)
    end
    if ARGV[a + 4] == "1" then
      local lock = KEYS[keyat[i] + 1]
      if redis.call("GET", lock) == id then
        redis.call("DEL", lock)
      end
    end
    acked = acked + 1
  end
end
if acked > 0 then
  redis.call("INCRBY", KEYS[4], acked)
  if redis.call("INCRBY", KEYS[5], acked) == acked then
    redis.call("EXPIREAT", KEYS[5], ARGV[1])
  end
end
return live
