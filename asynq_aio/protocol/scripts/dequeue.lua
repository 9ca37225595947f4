-- Move the tasks the caller saw at the tail of pending into active, each with a lease.
-- The caller names the IDs it expects (rightmost first) so that their hashes are declared keys;
-- it gets back how many matched and the new tail, to name next time.
-- KEYS[1] pending  KEYS[2] active  KEYS[3] lease  KEYS[4] paused  KEYS[4+i] hash of ARGV[2+i]
-- ARGV[1] lease expiry (unix s)  ARGV[2] how many IDs of the new tail to return
-- ARGV[3..] expected IDs, rightmost first
-- Returns {-1} when paused, else {matched, {msg or false ...}, {new tail, rightmost first}}.
if redis.call("EXISTS", KEYS[4]) == 1 then
  return {-1}
end
local n = #ARGV - 2
local tail = redis.call("LRANGE", KEYS[1], -n, -1)
local m = 0
for i = 1, n do
  if tail[#tail - i + 1] ~= ARGV[i + 2] then
    break
  end
  m = i
end
local msgs = {}
for i = 1, m do
  msgs[i] = redis.call("HGET", KEYS[4 + i], "msg")
end
-- writes: an ID whose hash is gone (deleted under us) is dropped from pending, not handed out
for i = 1, m do
  if msgs[i] then
    redis.call("LMOVE", KEYS[1], KEYS[2], "RIGHT", "LEFT")
    redis.call("ZADD", KEYS[3], ARGV[1], ARGV[i + 2])
    redis.call("HSET", KEYS[4 + i], "state", "active")
    redis.call("HDEL", KEYS[4 + i], "pending_since")
  else
    redis.call("RPOP", KEYS[1])
  end
end
-- the tail to name next time is as long as the caller asked: a short batch now must not cap the next
local newtail = redis.call("LRANGE", KEYS[1], -tonumber(ARGV[2]), -1)
local rev = {}
for i = #newtail, 1, -1 do
  rev[#rev + 1] = newtail[i]
end
return {m, msgs, rev}
