-- Move a due group's oldest members (up to max size) into a new aggregation set, on Asynq's criteria:
-- the group reached max size, or its oldest member waited max delay, or its newest member is older
-- than the grace period (nothing added for that long).
-- KEYS[1] group zset  KEYS[2] the new aggregation set  KEYS[3] aggregation_sets  KEYS[4] groups
-- KEYS[4+i] hash of candidate ARGV[6+i]
-- ARGV[1] max size (0 = none)  ARGV[2] max delay s (0 = none)  ARGV[3] grace period s
-- ARGV[4] the set's reclaim deadline (unix s)  ARGV[5] now (unix s)  ARGV[6] group name
-- ARGV[7..] candidate IDs, oldest first, read by the caller
-- Returns {1, ids, msgs}: set created (or created earlier by this same call, re-sent);
-- {0}: not due (an empty group is dropped from the groups set);
-- {-1}: due, but no candidate is in the group any more (another server took them): read again.
local function members_of_set()
  local keyof = {}
  for i = 7, #ARGV do
    keyof[ARGV[i]] = KEYS[i - 2]
  end
  local ids = redis.call("ZRANGE", KEYS[2], 0, -1)
  local msgs = {}
  for j, id in ipairs(ids) do
    local key = keyof[id]
    msgs[j] = (key and redis.call("HGET", key, "msg")) or ""
  end
  return {1, ids, msgs}
end

-- a re-send of a call that already succeeded finds its own set
if redis.call("EXISTS", KEYS[2]) == 1 then
  return members_of_set()
end
local size = redis.call("ZCARD", KEYS[1])
if size == 0 then
  redis.call("SREM", KEYS[4], ARGV[6])
  return {0}
end
local max_size = tonumber(ARGV[1])
local max_delay = tonumber(ARGV[2])
local grace = tonumber(ARGV[3])
local now = tonumber(ARGV[5])
local due = max_size > 0 and size >= max_size
if not due and max_delay > 0 then
  local oldest = tonumber(redis.call("ZRANGE", KEYS[1], 0, 0, "WITHSCORES")[2])
  due = oldest <= now - max_delay
end
if not due then
  local newest = tonumber(redis.call("ZREVRANGE", KEYS[1], 0, 0, "WITHSCORES")[2])
  -- a whole-second score (Asynq writes them) means "added at some time within that second"
  if newest == math.floor(newest) then
    newest = newest + 1
  end
  due = newest <= now - grace
end
if not due then
  return {0}
end
local picked = {}
local scores = {}
for i = 7, #ARGV do
  if max_size > 0 and #picked >= max_size then
    break
  end
  local score = redis.call("ZSCORE", KEYS[1], ARGV[i])
  if score then
    picked[#picked + 1] = i
    scores[#scores + 1] = score
  end
end
if #picked == 0 then
  return {-1}
end
-- writes: every check has passed
for j, i in ipairs(picked) do
  redis.call("ZADD", KEYS[2], scores[j], ARGV[i])
  redis.call("ZREM", KEYS[1], ARGV[i])
end
redis.call("ZADD", KEYS[3], ARGV[4], KEYS[2])
if redis.call("ZCARD", KEYS[1]) == 0 then
  redis.call("SREM", KEYS[4], ARGV[6])
end
return members_of_set()
