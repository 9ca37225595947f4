-- Archive tasks that are still in the state the caller saw: one task, or a batch of <= 100 IDs the
-- caller read from the container. Active tasks are never archived here.
-- KEYS[1] source: pending list, or scheduled/retry/group zset  KEYS[2] archived zset
-- KEYS[3] groups set  KEYS[3+i] hash of task i
-- ARGV[1] source state  ARGV[2] group name ("" unless aggregating)  ARGV[3] now (unix s)
-- ARGV[3+i] ID of task i
-- Returns {archived, dropped}: dropped = IDs whose hash was already gone, removed from the source.
-- Safe to run twice: an archived task is no longer in the source state.
local state = ARGV[1]
local is_list = state == "pending"
local move, drop = {}, {}
-- checks
for i = 4, #ARGV do
  local in_source = is_list or redis.call("ZSCORE", KEYS[1], ARGV[i])
  if in_source then
    local s = redis.call("HGET", KEYS[i], "state")
    if s == state then
      move[#move + 1] = i
    elseif not s then
      drop[#drop + 1] = i
    end
  end
end
-- writes
local dropped = 0
for _, i in ipairs(drop) do
  if is_list then
    dropped = dropped + redis.call("LREM", KEYS[1], -1, ARGV[i])
  else
    dropped = dropped + redis.call("ZREM", KEYS[1], ARGV[i])
  end
end
for _, i in ipairs(move) do
  if is_list then
    redis.call("LREM", KEYS[1], -1, ARGV[i])
  else
    redis.call("ZREM", KEYS[1], ARGV[i])
  end
  redis.call("ZADD", KEYS[2], ARGV[3], ARGV[i])
  redis.call("HSET", KEYS[i], "state", "archived")
  redis.call("HDEL", KEYS[i], "pending_since")
end
if ARGV[2] ~= "" and redis.call("ZCARD", KEYS[1]) == 0 then
  redis.call("SREM", KEYS[3], ARGV[2])
end
return {#move, dropped}
