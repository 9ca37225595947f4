-- Store a new task and put its ID where it waits: pending list, scheduled zset or group zset.
-- KEYS[1] task hash  KEYS[2] destination  KEYS[3] unique lock (if ARGV[6] > 0)  KEYS[#KEYS] groups set (if ARGV[7] ~= "")
-- ARGV[1] msg  ARGV[2] id  ARGV[3] now (unix ns)  ARGV[4] kind: pending|scheduled|aggregating
-- ARGV[5] score (process-at or added-at, unix s)  ARGV[6] unique TTL (s, 0 = none)  ARGV[7] group name
-- ARGV[8] "1" when the client generated the ID (a fresh UUID4), "0" when the caller chose it
-- Returns 1 enqueued (or found already enqueued by this same call re-sent), -1 ID conflict, -2 duplicate.
local kind = ARGV[4]
local has_unique = tonumber(ARGV[6]) > 0
-- checks first: nothing is written unless every check passes
if redis.call("EXISTS", KEYS[1]) == 1 then
  -- Is this our own call, re-sent after a lost reply? A client-generated UUID cannot belong to another
  -- call, so the same msg proves it. A caller-chosen ID can: then only a still-pending task stamped
  -- with this call's own nanosecond timestamp proves it.
  if redis.call("HGET", KEYS[1], "msg") == ARGV[1] then
    if ARGV[8] == "1" or redis.call("HGET", KEYS[1], "pending_since") == ARGV[3] then
      -- rewrite the same bytes: a write, so a WAIT that follows this re-send on its connection
      -- also covers the first write (whose reply was lost) before it confirms replication
      redis.call("HSET", KEYS[1], "msg", ARGV[1])
      return 1
    end
  end
  return -1
end
if has_unique then
  local holder = redis.call("GET", KEYS[3])
  if holder and holder ~= ARGV[2] then
    return -2
  end
end
-- writes
if has_unique then
  redis.call("SET", KEYS[3], ARGV[2], "EX", ARGV[6])
  redis.call("HSET", KEYS[1], "unique_key", KEYS[3])
end
if ARGV[7] ~= "" then
  redis.call("HSET", KEYS[1], "group", ARGV[7])
end
if kind == "pending" then
  redis.call("HSET", KEYS[1], "msg", ARGV[1], "state", "pending", "pending_since", ARGV[3])
  redis.call("LPUSH", KEYS[2], ARGV[2])
elseif kind == "scheduled" then
  redis.call("HSET", KEYS[1], "msg", ARGV[1], "state", "scheduled")
  redis.call("ZADD", KEYS[2], ARGV[5], ARGV[2])
else
  redis.call("HSET", KEYS[1], "msg", ARGV[1], "state", "aggregating")
  redis.call("ZADD", KEYS[2], ARGV[5], ARGV[2])
  redis.call("SADD", KEYS[#KEYS], ARGV[7])
end
return 1
