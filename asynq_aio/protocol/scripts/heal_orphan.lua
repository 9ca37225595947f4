-- Put back an ID found in active with no lease (a state no script leaves behind: dequeue writes the
-- active entry and the lease together, and every outcome removes both) at the head of pending.
-- KEYS[1] active  KEYS[2] lease  KEYS[3] pending  KEYS[4] task hash
-- ARGV[1] id  ARGV[2] now (unix ns)
-- Returns 1 healed, 0 not an orphan (it has a lease, or it left active meanwhile).
if redis.call("ZSCORE", KEYS[2], ARGV[1]) then
  return 0
end
if redis.call("LREM", KEYS[1], 0, ARGV[1]) == 0 then
  return 0
end
if redis.call("EXISTS", KEYS[4]) == 1 then
  redis.call("RPUSH", KEYS[3], ARGV[1])
  redis.call("HSET", KEYS[4], "state", "pending", "pending_since", ARGV[2])
end
return 1
