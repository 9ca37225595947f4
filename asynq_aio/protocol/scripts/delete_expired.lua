-- Remove completed tasks whose retention has passed (the janitor, in bounded batches).
-- KEYS[1] completed zset  KEYS[1+i] hash of ARGV[1+i]
-- ARGV[1] now (unix s)  ARGV[2..] candidate IDs
-- Returns the number removed.
local now = tonumber(ARGV[1])
local due = {}
for i = 2, #ARGV do
  local score = redis.call("ZSCORE", KEYS[1], ARGV[i])
  if score and tonumber(score) <= now then
    due[#due + 1] = i
  end
end
for _, i in ipairs(due) do
  redis.call("ZREM", KEYS[1], ARGV[i])
  redis.call("DEL", KEYS[i])
end
return #due
