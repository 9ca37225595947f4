-- Move due tasks from scheduled or retry to pending.
-- KEYS[1] source zset  KEYS[2] pending  KEYS[2+i] hash of ARGV[2+i]
-- ARGV[1] now (unix s)  ARGV[2] now (unix ns)  ARGV[3..] candidate IDs, read by the caller
-- Returns the number moved.
local now = tonumber(ARGV[1])
local due = {}
for i = 3, #ARGV do
  local score = redis.call("ZSCORE", KEYS[1], ARGV[i])
  if score and tonumber(score) <= now then
    due[#due + 1] = i
  end
end
local moved = 0
for _, i in ipairs(due) do
  redis.call("ZREM", KEYS[1], ARGV[i])
  if redis.call("EXISTS", KEYS[i]) == 1 then
    redis.call("LPUSH", KEYS[2], ARGV[i])
    redis.call("HSET", KEYS[i], "state", "pending", "pending_since", ARGV[2])
    moved = moved + 1
  end
end
return moved
