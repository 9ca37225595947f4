-- Store a handler's result in its task hash, as Go's ResultWriter does (field "result"), but only
-- while the attempt that produced it still owns the task: a late result must not land on a task
-- another attempt now runs, nor create a stray hash for a task that is gone.
-- KEYS[1] task hash  ARGV[1] result bytes  ARGV[2] attempt token ("" = no check)
-- Returns 1 written, 0 not (the task is gone or another attempt owns it).
if redis.call("EXISTS", KEYS[1]) == 0 then
  return 0
end
if ARGV[2] ~= "" and redis.call("HGET", KEYS[1], "aio_attempt") ~= ARGV[2] then
  return 0
end
redis.call("HSET", KEYS[1], "result", ARGV[1])
return 1
