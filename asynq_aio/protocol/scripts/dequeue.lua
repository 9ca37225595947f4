-- Move the tasks the caller saw at the tail of pending into active, each with a lease, and mark each
-- with the caller's attempt token (hash field aio_attempt, which Go Asynq ignores): outcomes and
-- lease extensions of this attempt name the token, and apply only while it is still there.
-- The caller names the IDs it expects (rightmost first) so that their hashes are declared keys;
-- it gets back how many matched and the new tail, to name next time.
-- Safe to re-send: a re-sent call (its reply was lost) finds the IDs it already took still active
-- under its own token and hands them back again, then goes on matching the rest against the tail.
-- KEYS[1] pending  KEYS[2] active  KEYS[3] lease  KEYS[4] paused  KEYS[4+i] hash of ARGV[3+i]
-- ARGV[1] lease expiry (unix s)  ARGV[2] how many IDs of the new tail to return
-- ARGV[3] attempt token (unique per call)  ARGV[4..] expected IDs, rightmost first
-- Returns {-1} when paused, else {matched, {msg or false ...}, {new tail, rightmost first}}.
local token = ARGV[3]
local n = #ARGV - 3
local msgs = {}
local mine = 0
while mine < n do
  local h = KEYS[5 + mine]
  if redis.call("HGET", h, "aio_attempt") ~= token or not redis.call("ZSCORE", KEYS[3], ARGV[4 + mine]) then
    break
  end
  mine = mine + 1
  msgs[mine] = redis.call("HGET", h, "msg")
end
if redis.call("EXISTS", KEYS[4]) == 1 then
  if mine == 0 then
    return {-1}
  end
  return {mine, msgs, {}}
end
local m = mine
local rest = n - mine
if rest > 0 then
  local tail = redis.call("LRANGE", KEYS[1], -rest, -1)
  for i = 1, rest do
    if tail[#tail - i + 1] ~= ARGV[3 + mine + i] then
      break
    end
    m = mine + i
  end
end
for i = mine + 1, m do
  msgs[i] = redis.call("HGET", KEYS[4 + i], "msg")
end
-- writes: an ID whose hash is gone (deleted under us) is dropped from pending, not handed out
for i = mine + 1, m do
  if msgs[i] then
    redis.call("LMOVE", KEYS[1], KEYS[2], "RIGHT", "LEFT")
    redis.call("ZADD", KEYS[3], ARGV[1], ARGV[3 + i])
    redis.call("HSET", KEYS[4 + i], "state", "active", "aio_attempt", token)
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
