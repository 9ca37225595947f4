-- Reconcile one task whose hash `state` disagreed with the state list/zset it was sampled from.
-- No script leaves such a task (each moves the ID and sets the state together), but a foreign writer,
-- an operator's hand edit or a script Redis aborted half-way can; then the task is never picked up
-- again, or is handled as if it were somewhere else. Everything is re-checked here, atomically: the
-- caller's sample is only a candidate.
-- KEYS[1] pending  KEYS[2] active  KEYS[3] lease  KEYS[4] scheduled  KEYS[5] retry  KEYS[6] archived
-- KEYS[7] completed  KEYS[8] task hash
-- ARGV[1] id  ARGV[2] where it was seen: pending|active|scheduled|retry|archived|completed
-- ARGV[3] now (unix ns)
-- Returns 0 nothing to do (consistent now, moved meanwhile, or left to another fix),
-- 1 the hash's state was set to where the ID is, 2 a stray ID without a hash was removed,
-- 3 a stray ID was removed from `where` because it is also where its hash's state says.
local slot = {pending = 1, active = 2, scheduled = 4, retry = 5, archived = 6, completed = 7}
local id, where = ARGV[1], ARGV[2]
local function is_list(name)
  return name == "pending" or name == "active"
end
local function member(name)
  if is_list(name) then
    return redis.call("LPOS", KEYS[slot[name]], id) ~= false
  end
  return redis.call("ZSCORE", KEYS[slot[name]], id) ~= false
end
local function remove(name)
  if is_list(name) then
    redis.call("LREM", KEYS[slot[name]], 0, id)
  else
    redis.call("ZREM", KEYS[slot[name]], id)
  end
  if name == "active" then
    redis.call("ZREM", KEYS[3], id)
  end
end
-- checks first
if not slot[where] or not member(where) then
  return 0
end
if redis.call("EXISTS", KEYS[8]) == 0 then
  -- a task deleted under its ID (the hash is the task): drop the ID. An active one with a live lease
  -- is left to its worker, whose ack clears it.
  if where == "active" and redis.call("ZSCORE", KEYS[3], id) then
    return 0
  end
  remove(where)
  return 2
end
local state = redis.call("HGET", KEYS[8], "state")
if state == where then
  return 0
end
if state and slot[state] and member(state) then
  -- listed twice: the entry the hash agrees with stays, the stray one goes (unless it is a running
  -- task's active entry: its worker's outcome resolves it)
  if where == "active" and redis.call("ZSCORE", KEYS[3], id) then
    return 0
  end
  remove(where)
  return 3
end
if state and not slot[state] then
  return 0 -- aggregating (in a group zset, not declared here) or a state this script does not know
end
if where == "active" and not redis.call("ZSCORE", KEYS[3], id) then
  return 0 -- active without a lease: heal_orphan requeues it
end
-- writes: the ID is only where it was seen, so the hash follows
if where == "pending" then
  redis.call("HSET", KEYS[8], "state", "pending", "pending_since", ARGV[3])
else
  redis.call("HSET", KEYS[8], "state", where)
  redis.call("HDEL", KEYS[8], "pending_since")
end
return 1
