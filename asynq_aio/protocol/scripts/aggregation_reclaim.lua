-- Give the members of aggregation sets whose deadline passed (their server died or stalled) back to
-- their groups, with their original scores, so that a later check aggregates them again.
-- KEYS[1] aggregation_sets  KEYS[2] groups  KEYS[1+2i] stale set i  KEYS[2+2i] its group zset
-- ARGV[1] now (unix s)  ARGV[1+i] group name of set i; both read by the caller
-- Returns the number of sets reclaimed.
local now = tonumber(ARGV[1])
local stale = {}
for i = 1, #ARGV - 1 do
  local deadline = redis.call("ZSCORE", KEYS[1], KEYS[1 + 2 * i])
  if deadline and tonumber(deadline) <= now then
    stale[#stale + 1] = i
  end
end
-- writes: every check has passed
for _, i in ipairs(stale) do
  local set = KEYS[1 + 2 * i]
  local members = redis.call("ZRANGE", set, 0, -1, "WITHSCORES")
  for m = 1, #members, 2 do
    redis.call("ZADD", KEYS[2 + 2 * i], members[m + 1], members[m])
  end
  if #members > 0 then
    redis.call("SADD", KEYS[2], ARGV[1 + i])
  end
  redis.call("DEL", set)
  redis.call("ZREM", KEYS[1], set)
end
return #stale
