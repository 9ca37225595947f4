-- Dequeue from a queue that has flow-control limits (rate limits, concurrency caps): like dequeue.lua,
-- but each candidate is checked against every limit that applies to it BEFORE it is taken, so a
-- limited task stays in pending (never taken and put back). Candidates are the `window` tasks at the
-- tail of pending, oldest first; a limited one is skipped and the next is looked at, so one limited
-- task type does not hold up the others queued behind it (within the window).
-- Limit state lives in the queue's slot (the keys carry its hash tag):
--   rate  GCRA: the key holds the theoretical arrival time (ms); a start is allowed while it is at
--         most `tolerance` ms ahead of now, and pushes it `interval` ms further.
--   cap   a set of the task IDs holding a slot; a holder whose task is no longer leased (acked,
--         failed, requeued, or its worker died and the lease ran out) is pruned before counting, so
--         no outcome script has to know about limits and a crashed worker's slots come back when
--         its leases expire.
-- A limit keyed by a payload field (per tenant) reads that top-level field of the JSON payload;
-- a payload that is not JSON or lacks the field counts under the empty key.
-- Time is Redis' own (TIME), the same for every worker.
-- Safe to re-send: the IDs a call took are recorded under its token (KEYS[5], 10 min); a re-sent
-- call hands back those still leased to it and takes nothing new.
-- KEYS[1] pending  KEYS[2] active  KEYS[3] lease  KEYS[4] paused  KEYS[5] record of this call's IDs
-- ARGV[1] lease expiry (unix s)  ARGV[2] how many to take  ARGV[3] attempt token  ARGV[4] window
-- ARGV[5] task hash key prefix  ARGV[6] number of limits, then 6 values per limit:
--   kind (rate|cap), task type ("" = any), payload field ("" = none), state key prefix,
--   rate: interval ms, tolerance ms | cap: the cap, 0
-- Returns {-1} when paused, else {taken, {ids}, {msgs}, ms until a rate-limited task may start (-1:
-- none was rate limited), 1 if a task was held back by a cap else 0, how many candidates there were}.
local token = ARGV[3]
local hash = ARGV[5]

local took = redis.call("LRANGE", KEYS[5], 0, -1)
if #took > 0 then
  local ids, msgs = {}, {}
  for _, id in ipairs(took) do
    if redis.call("HGET", hash .. id, "aio_attempt") == token and redis.call("ZSCORE", KEYS[3], id) then
      ids[#ids + 1] = id
      msgs[#msgs + 1] = redis.call("HGET", hash .. id, "msg") or false
    end
  end
  return {#ids, ids, msgs, -1, 0, #took}
end
if redis.call("EXISTS", KEYS[4]) == 1 then
  return {-1}
end

-- the task type (field 1) and payload (field 2) of a stored TaskMessage (protobuf)
local function varint(s, pos)
  local v, mul = 0, 1
  while true do
    local b = string.byte(s, pos)
    if not b then
      return nil, pos
    end
    pos = pos + 1
    v = v + (b % 128) * mul
    if b < 128 then
      return v, pos
    end
    mul = mul * 128
  end
end
local function type_and_payload(msg)
  local pos, ttype, payload = 1, "", ""
  local seen = 0
  while pos <= #msg and seen < 2 do
    local key
    key, pos = varint(msg, pos)
    if not key then
      break
    end
    local field, wire = math.floor(key / 8), key % 8
    if wire == 2 then
      local len
      len, pos = varint(msg, pos)
      if not len then
        break
      end
      local v = string.sub(msg, pos, pos + len - 1)
      pos = pos + len
      if field == 1 then
        ttype, seen = v, seen + 1
      elseif field == 2 then
        payload, seen = v, seen + 1
      end
    elseif wire == 0 then
      local _
      _, pos = varint(msg, pos)
    elseif wire == 1 then
      pos = pos + 8
    elseif wire == 5 then
      pos = pos + 4
    else
      break
    end
  end
  return ttype, payload
end
local function field_of(payload, name)
  local ok, doc = pcall(cjson.decode, payload)
  if not ok or type(doc) ~= "table" then
    return ""
  end
  local v = doc[name]
  if type(v) == "string" then
    return v
  elseif type(v) == "number" then
    if v == math.floor(v) and v >= -1e15 and v <= 1e15 then
      return string.format("%d", v)
    end
    return tostring(v)
  end
  return ""
end

local limits = {}
for i = 0, tonumber(ARGV[6]) - 1 do
  local b = 7 + i * 6
  limits[#limits + 1] = {
    kind = ARGV[b], ttype = ARGV[b + 1], field = ARGV[b + 2], prefix = ARGV[b + 3],
    a = tonumber(ARGV[b + 4]), b = tonumber(ARGV[b + 5]),
  }
end

local t = redis.call("TIME")
local now_s = tonumber(t[1])
local now_ms = now_s * 1000 + math.floor(tonumber(t[2]) / 1000)
local want = tonumber(ARGV[2])
local window = redis.call("LRANGE", KEYS[1], -tonumber(ARGV[4]), -1)
local pruned = {}
local ids, msgs = {}, {}
local retry = -1
local capped = 0
-- a limit on every task of the queue (no task type, no key) that holds one candidate back holds
-- back all the others too: stop looking, instead of reading the whole window for nothing
local stop = false

for i = #window, 1, -1 do
  if #ids >= want or stop then
    break
  end
  local id = window[i]
  local msg = redis.call("HGET", hash .. id, "msg")
  if not msg then
    redis.call("LREM", KEYS[1], -1, id) -- deleted under us: dropped, as dequeue.lua does
  else
    local ttype, payload = type_and_payload(msg)
    local ok = true
    local commit = {}
    for _, l in ipairs(limits) do
      if ok and (l.ttype == "" or l.ttype == ttype) then
        local key = l.prefix
        if l.field ~= "" then
          key = key .. field_of(payload, l.field)
        end
        if l.kind == "rate" then
          local tat = math.max(tonumber(redis.call("GET", key) or "0"), now_ms)
          if tat - now_ms > l.b then
            ok = false
            stop = stop or (l.ttype == "" and l.field == "")
            local wait = tat - l.b - now_ms
            if retry < 0 or wait < retry then
              retry = wait
            end
          else
            commit[#commit + 1] = {"rate", key, tat + l.a, math.ceil(tat + l.a - now_ms) + 1000}
          end
        else
          if not pruned[key] then
            pruned[key] = true
            for _, holder in ipairs(redis.call("SMEMBERS", key)) do
              local lease = redis.call("ZSCORE", KEYS[3], holder)
              if not lease or tonumber(lease) < now_s then
                redis.call("SREM", key, holder)
              end
            end
          end
          if redis.call("SCARD", key) >= l.a then
            ok = false
            stop = stop or (l.ttype == "" and l.field == "")
            capped = 1
          else
            commit[#commit + 1] = {"cap", key}
          end
        end
      end
    end
    if ok then
      for _, c in ipairs(commit) do
        if c[1] == "rate" then
          redis.call("SET", c[2], c[3], "PX", c[4])
        else
          redis.call("SADD", c[2], id)
          redis.call("EXPIRE", c[2], 86400)
        end
      end
      ids[#ids + 1] = id
      msgs[#msgs + 1] = msg
    end
  end
end

for _, id in ipairs(ids) do
  redis.call("LREM", KEYS[1], -1, id)
  redis.call("LPUSH", KEYS[2], id)
  redis.call("ZADD", KEYS[3], ARGV[1], id)
  redis.call("HSET", hash .. id, "state", "active", "aio_attempt", token)
  redis.call("HDEL", hash .. id, "pending_since")
end
if #ids > 0 then
  redis.call("RPUSH", KEYS[5], unpack(ids))
  redis.call("EXPIRE", KEYS[5], 600)
end
return {#ids, ids, msgs, retry, capped, #window}
