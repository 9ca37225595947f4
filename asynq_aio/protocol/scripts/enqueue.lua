-- Store new tasks of ONE queue and put each ID where it waits: pending list, scheduled zset or group
-- zset. One script for one task and for a batch: Redis runs one script instead of hundreds, and a
-- single enqueue is a batch of one. Each task is checked on its own, its checks before its writes: a
-- task whose ID or unique lock is taken gets its code and the others are still stored.
--
-- Safe to run twice. Every task of a call carries a sequence number its producer drew for it, and
-- storing the task sets that number's bit in the producer's fence bitmap (KEYS[1]). A re-send of the
-- call (the reply of the first send was lost) finds the bit set and reports 1 without writing the
-- task again, even when a worker has meanwhile run the task and deleted its hash. The bitmap expires
-- FENCE_TTL seconds after its producer's last enqueue, far beyond any re-send.
--
-- KEYS[1] the producer's fence bitmap for this queue; then, per task in order: its hash, its
--   destination (pending list, scheduled zset or group zset), its unique lock (when its unique TTL
--   > 0), the queue's groups set (when kind is aggregating)
-- ARGV[1] now (unix ns, the pending_since of pending tasks)  ARGV[2] the fence bitmap's TTL (s)
-- then, per task 3 values: msg, id, and one spec string "SEQ SCORE TTL NKEYS KIND GROUP": SEQ the
--   task's bit in the fence bitmap, SCORE process-at or added-at (unix s, with a fraction), TTL
--   unique TTL (s, 0 = none), NKEYS the number of its KEYS, KIND pending|scheduled|aggregating,
--   GROUP the group name (may be empty; the rest of the string). One string instead of six arguments: the client packs
--   each argument on its own, and that packing was the largest cost of a batch.
-- Returns one code per task, in order: 1 enqueued (or stored by this same call before, re-sent),
-- -1 ID conflict, -2 duplicate (unique lock held by another task).
local fence, now = KEYS[1], ARGV[1]

local function enqueue(k, msg, id, seq, score, ttl, nkeys, kind, group)
  local hash, dest = KEYS[k], KEYS[k + 1]
  if redis.call("GETBIT", fence, seq) == 1 then
    return 1 -- this call was here before and stored the task
  end
  local lock = nil
  if tonumber(ttl) > 0 then
    lock = KEYS[k + 2]
  end
  -- checks first: nothing of this task is written unless every check passes
  if redis.call("EXISTS", hash) == 1 then
    return -1
  end
  if lock then
    local holder = redis.call("GET", lock)
    if holder and holder ~= id then
      return -2
    end
  end
  -- writes, in the order Go's enqueue scripts make them
  redis.call("SETBIT", fence, seq, 1)
  if lock then
    redis.call("SET", lock, id, "EX", ttl)
    redis.call("HSET", hash, "unique_key", lock)
  end
  if group ~= "" then
    redis.call("HSET", hash, "group", group)
  end
  if kind == "pending" then
    redis.call("HSET", hash, "msg", msg, "state", "pending", "pending_since", now)
    redis.call("LPUSH", dest, id)
  elseif kind == "scheduled" then
    redis.call("HSET", hash, "msg", msg, "state", "scheduled")
    redis.call("ZADD", dest, score, id)
  else
    redis.call("HSET", hash, "msg", msg, "state", "aggregating")
    redis.call("ZADD", dest, score, id)
    redis.call("SADD", KEYS[k + nkeys - 1], group)
  end
  return 1
end

local codes = {}
local k = 2
for a = 3, #ARGV, 3 do
  local seq, score, ttl, nkeys, kind, group =
    string.match(ARGV[a + 2], "^(%d+) (%-?[%d%.]+) (%d+) (%d+) (%l+) (.*)$")
  nkeys = tonumber(nkeys)
  codes[#codes + 1] = enqueue(k, ARGV[a], ARGV[a + 1], seq, score, ttl, nkeys, kind, group)
  k = k + nkeys
end
-- Always a write, also on a re-send that wrote nothing else: a WAIT that follows a re-send on its
-- connection then also covers the first send's writes before it confirms replication.
redis.call("EXPIRE", fence, ARGV[2])
return codes
