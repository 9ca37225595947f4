-- Trim the archive as Asynq does (older than the cutoff, or beyond the newest N), deleting the
-- trimmed tasks' hashes too. The caller names the oldest candidates (<= 100, oldest first).
-- KEYS[1] archived zset  KEYS[1+i] hash of candidate i
-- ARGV[1] cutoff (unix s: older is trimmed)  ARGV[2] most archived tasks kept  ARGV[2+i] candidate ID i
-- Returns the number trimmed. Safe to run twice: a trimmed ID is no longer in the zset.
local cutoff = tonumber(ARGV[1])
local excess = redis.call("ZCARD", KEYS[1]) - tonumber(ARGV[2])
local trim = {}
-- checks
for i = 3, #ARGV do
  local score = redis.call("ZSCORE", KEYS[1], ARGV[i])
  if score and (tonumber(score) < cutoff or #trim < excess) then
    trim[#trim + 1] = i
  end
end
-- writes
for _, i in ipairs(trim) do
  redis.call("ZREM", KEYS[1], ARGV[i])
  if redis.call("HGET", KEYS[i - 1], "state") == "archived" then
    redis.call("DEL", KEYS[i - 1])
  end
end
return #trim
