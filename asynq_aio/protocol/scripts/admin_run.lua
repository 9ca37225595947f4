-- Move tasks that are still in the state the caller saw to pending (run them now): one task, or a
-- batch of <= 100 IDs the caller read from the container.
-- KEYS[1] source zset (scheduled, retry, archived or group)  KEYS[2] pending  KEYS[3] groups set
-- KEYS[3+i] hash of task i
-- ARGV[1] source state  ARGV[2] group name ("" unless aggregating)  ARGV[3] now (unix ns)
-- ARGV[3+i] ID of task i
-- Returns {moved, dropped}: dropped = IDs whose hash was already gone, removed from the source.
-- Safe to run twice: a moved task is no longer in the source state.
local state = ARGV[1]
local move, drop = {}, {}
-- checks
for i = 4, #ARGV do
  if redis.call("ZSCORE", KEYS[1], ARGV[i]) then
    local s = redis.call("HGET", KEYS[i], "state")
    if s == state then
      move[#move + 1] = i
    elseif not s then
      drop[#drop + 1] = i
    end
  end
end
-- writes
for _, i in ipairs(drop) do
  redis.call("ZREM", KEYS[1], ARGV[i])
end
for _, i in ipairs(move) do
  redis.call("ZREM", KEYS[1], ARGV[i])
  redis.call("LPUSH", KEYS[2], ARGV[i])
  redis.call("HSET", KEYS[i], "state", "pending", "pending_since", ARGV[3])
end
if ARGV[2] ~= "" and redis.call("ZCARD", KEYS[1]) == 0 then
  redis.call("SREM", KEYS[3], ARGV[2])
end
return {#move, #drop}
