-- The earliest due time of a queue's scheduled and retry tasks: the forwarder's look at a queue
-- before it forwards (an idle queue costs this one read-only call a round).
-- KEYS[1] scheduled  KEYS[2] retry
-- Returns the lowest score of the two as a string, or false when both are empty.
local s = redis.call("ZRANGE", KEYS[1], 0, 0, "WITHSCORES")[2]
local r = redis.call("ZRANGE", KEYS[2], 0, 0, "WITHSCORES")[2]
if s and (not r or tonumber(s) <= tonumber(r)) then
  return s
end
return r or false
