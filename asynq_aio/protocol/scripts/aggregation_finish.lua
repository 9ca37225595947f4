-- Store the task an aggregator made from a set, and delete the set and its members, atomically:
-- either the merged task is pending and the members are gone, or nothing changed.
-- KEYS[1] aggregation set  KEYS[2] aggregation_sets  KEYS[3] merged task hash  KEYS[4] pending
-- KEYS[4+i] hash of member ARGV[4+i] (i = 1..n)  KEYS[4+n+j] unique lock owned by ARGV[4+n+j]
-- ARGV[1] merged msg  ARGV[2] merged ID  ARGV[3] now (unix ns)  ARGV[4] n = number of members
-- ARGV[5..4+n] member IDs  ARGV[5+n..] owners of the unique locks
-- ARGV[1] = "" discards the set with no merged task (its members' hashes are all gone); KEYS[3] is
-- then not touched.
-- Returns 1 done (or done earlier by this same call, re-sent); 0 the set is gone (its deadline
-- passed and another server reclaimed it): nothing written; -1 the merged task's ID is taken.
local merged = ARGV[1] ~= ""
if merged and redis.call("EXISTS", KEYS[3]) == 1 then
  if redis.call("HGET", KEYS[3], "msg") == ARGV[1] then
    return 1
  end
  return -1
end
if not redis.call("ZSCORE", KEYS[2], KEYS[1]) then
  return 0
end
local n = tonumber(ARGV[4])
local members = {}
for i = 1, n do
  if redis.call("ZSCORE", KEYS[1], ARGV[4 + i]) then
    members[ARGV[4 + i]] = true
  end
end
local locks = {}
for j = 1, #KEYS - 4 - n do
  local owner = ARGV[4 + n + j]
  if members[owner] and redis.call("GET", KEYS[4 + n + j]) == owner then
    locks[#locks + 1] = KEYS[4 + n + j]
  end
end
-- writes: every check has passed
for i = 1, n do
  if members[ARGV[4 + i]] then
    redis.call("DEL", KEYS[4 + i])
  end
end
for _, key in ipairs(locks) do
  redis.call("DEL", key)
end
redis.call("DEL", KEYS[1])
redis.call("ZREM", KEYS[2], KEYS[1])
if merged then
  redis.call("HSET", KEYS[3], "msg", ARGV[1], "state", "pending", "pending_since", ARGV[3])
  redis.call("LPUSH", KEYS[4], ARGV[2])
end
return 1
