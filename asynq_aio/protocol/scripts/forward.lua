-- Move due tasks from scheduled or retry to pending, or to their group when the hash names one
-- (a grouped task given process_in/process_at aggregates once due; Asynq skips aggregation then).
-- KEYS[1] source zset  KEYS[2] pending  KEYS[3] groups set
-- KEYS[2+2i] hash of candidate i  KEYS[3+2i] its destination: pending, or its group zset
-- ARGV[1] now (unix s)  ARGV[2] now (unix ns)
-- ARGV[1+2i] candidate ID i  ARGV[2+2i] its hash's group field ("" = none), both read by the caller
-- Returns the number moved.
local now = tonumber(ARGV[1])
local due = {}
for i = 1, (#ARGV - 2) / 2 do
  local score = redis.call("ZSCORE", KEYS[1], ARGV[1 + 2 * i])
  if score and tonumber(score) <= now then
    -- a group field that changed since the caller read it would mean the wrong destination key:
    -- leave that task for the next round
    if (redis.call("HGET", KEYS[2 + 2 * i], "group") or "") == ARGV[2 + 2 * i] then
      due[#due + 1] = i
    end
  end
end
-- writes: every check has passed
local moved = 0
for _, i in ipairs(due) do
  local id, hash, group = ARGV[1 + 2 * i], KEYS[2 + 2 * i], ARGV[2 + 2 * i]
  redis.call("ZREM", KEYS[1], id)
  if redis.call("EXISTS", hash) == 1 then
    if group == "" then
      redis.call("LPUSH", KEYS[3 + 2 * i], id)
      redis.call("HSET", hash, "state", "pending", "pending_since", ARGV[2])
    else
      redis.call("ZADD", KEYS[3 + 2 * i], ARGV[1], id)
      redis.call("HSET", hash, "state", "aggregating")
      redis.call("SADD", KEYS[3], group)
    end
    moved = moved + 1
  end
end
return moved
