-- Delete tasks that are still in the state the caller saw (one task, or a batch of <= 100 IDs the
-- caller read from the container). Active tasks are never deleted (cancel them instead).
-- KEYS[1] source container: pending list, or scheduled/retry/archived/completed zset, or group zset
-- KEYS[2] groups set  KEYS[2+i] hash of task i (i = 1..n)  KEYS[2+n+j] unique lock j
-- ARGV[1] source state  ARGV[2] group name ("" unless aggregating)  ARGV[3] n
-- ARGV[3+i] ID of task i  ARGV[3+n+i] index j of task i's unique lock (0 = none)
-- Returns {deleted, dropped}: dropped = IDs whose hash was already gone, removed from the container.
-- Safe to run twice: a deleted task has no hash and is no longer in its container.
local state = ARGV[1]
local is_list = state == "pending"
local n = tonumber(ARGV[3])
local delete, drop, unlock = {}, {}, {}
-- checks
for i = 1, n do
  local id = ARGV[3 + i]
  local in_source = is_list or redis.call("ZSCORE", KEYS[1], id)
  local s = redis.call("HGET", KEYS[2 + i], "state")
  if s == state and in_source then
    delete[#delete + 1] = i
    local j = tonumber(ARGV[3 + n + i])
    if j > 0 and redis.call("GET", KEYS[2 + n + j]) == id then
      unlock[#unlock + 1] = 2 + n + j
    end
  elseif not s and in_source then
    drop[#drop + 1] = i
  end
end
-- writes
local dropped = 0
for _, i in ipairs(drop) do
  local id = ARGV[3 + i]
  if is_list then
    dropped = dropped + redis.call("LREM", KEYS[1], -1, id)
  else
    dropped = dropped + redis.call("ZREM", KEYS[1], id)
  end
end
for _, i in ipairs(delete) do
  local id = ARGV[3 + i]
  if is_list then
    redis.call("LREM", KEYS[1], -1, id)
  else
    redis.call("ZREM", KEYS[1], id)
  end
  redis.call("DEL", KEYS[2 + i])
end
for _, k in ipairs(unlock) do
  redis.call("DEL", KEYS[k])
end
if ARGV[2] ~= "" and redis.call("ZCARD", KEYS[1]) == 0 then
  redis.call("SREM", KEYS[2], ARGV[2])
end
return {#delete, dropped}
