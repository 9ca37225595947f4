-- Store a batch of new tasks of ONE queue: for each task, exactly what enqueue.lua does, in order.
-- One call per batch instead of one per task: Redis runs one script instead of hundreds, and the
-- client packs and parses one command. Each task is checked on its own, its checks before its
-- writes: a task whose ID or unique lock is taken gets its code and the others are still stored.
-- Safe to run twice: a re-sent batch finds its own tasks (same msg, same pending_since) and
-- reports 1 for them again without writing anything new.
-- KEYS, per task in order: its hash, its destination (pending list, scheduled zset or group zset),
--   its unique lock (when its unique TTL > 0), the queue's groups set (when kind is aggregating)
-- ARGV, per task 3 values: msg, id, and one spec string "NOW SCORE TTL GEN NKEYS KIND GROUP":
--   NOW unix ns (distinct per task), SCORE process-at or added-at (unix s), TTL unique TTL (s, 0 =
--   none), GEN 1 when the client generated the ID / 0 when the caller chose it, NKEYS the number
--   of its KEYS, KIND pending|scheduled|aggregating, GROUP the group name (may be empty; the rest
--   of the string). One string instead of seven arguments: the client packs each argument on its
--   own, and that packing was the largest cost of a batch.
-- Returns one code per task, in order: 1 enqueued (or already enqueued by this same call, re-sent),
-- -1 ID conflict, -2 duplicate (unique lock held by another task).
local function enqueue(k, msg, id, now, score, ttl, gen, nkeys, kind, group)
  local hash, dest = KEYS[k], KEYS[k + 1]
  local lock = nil
  if tonumber(ttl) > 0 then
    lock = KEYS[k + 2]
  end
  -- checks first: nothing of this task is written unless every check passes
  if redis.call("EXISTS", hash) == 1 then
    -- our own call re-sent after a lost reply? (see enqueue.lua for why this proves it)
    if redis.call("HGET", hash, "msg") == msg then
      if gen == "1" or redis.call("HGET", hash, "pending_since") == now then
        -- a write, so a WAIT after this re-send also covers the first write
        redis.call("HSET", hash, "msg", msg)
        return 1
      end
    end
    return -1
  end
  if lock then
    local holder = redis.call("GET", lock)
    if holder and holder ~= id then
      return -2
    end
  end
  -- writes: the same commands, in the same order, as enqueue.lua
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
local k = 1
for a = 1, #ARGV, 3 do
  local now, score, ttl, gen, nkeys, kind, group =
    string.match(ARGV[a + 2], "^(%d+) (%-?%d+) (%d+) ([01]) (%d+) (%l+) (.*)$")
  nkeys = tonumber(nkeys)
  codes[#codes + 1] = enqueue(k, ARGV[a], ARGV[a + 1], now, score, ttl, gen, nkeys, kind, group)
  k = k + nkeys
end
return codes
