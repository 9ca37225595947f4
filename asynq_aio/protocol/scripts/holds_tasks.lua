-- Whether a queue has anything for the recoverer: an ID in active or a lease (an expired lease, or
-- an active ID without one, is what it looks for). An idle queue costs this one read-only call a round.
-- KEYS[1] active  KEYS[2] lease
-- Returns how many of the two keys exist (0: nothing to recover).
return redis.call("EXISTS", KEYS[1], KEYS[2])
