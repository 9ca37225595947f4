-- Whether a queue has anything for the janitor: a completed task whose retention has passed, or an
-- archive beyond Asynq's limits (more than ARGV[3] entries, or one archived before ARGV[2]). An idle
-- queue costs this one read-only call a round.
-- KEYS[1] completed  KEYS[2] archived
-- ARGV[1] now (unix s)  ARGV[2] archive cutoff (unix s)  ARGV[3] archive max
-- Returns 1 when there is work, else 0.
if #redis.call("ZRANGEBYSCORE", KEYS[1], "-inf", ARGV[1], "LIMIT", 0, 1) > 0 then
  return 1
end
if redis.call("ZCARD", KEYS[2]) > tonumber(ARGV[3]) then
  return 1
end
if #redis.call("ZRANGEBYSCORE", KEYS[2], "-inf", "(" .. ARGV[2], "LIMIT", 0, 1) > 0 then
  return 1
end
return 0
