-- Rate limiting, fixed window: one hit (or peek) against one limit, on the server's clock.
-- KEYS[1] the window's counter: a string holding the units admitted in the current window,
--         created by its first hit and expiring at the window's end, the next multiple of the
--         window length on the server's clock (epoch ms)
-- ARGV[1] cost: units the hit consumes (1 <= cost <= limit, checked by the client); 0 for a
--         peek, which says whether a hit of cost 1 would pass and writes nothing
-- ARGV[2] limit (<= 10^15)
-- ARGV[3] window in ms
-- ARGV[4] '1': the reply packed into one string, else an array
-- returns {allowed (1/0), remaining, retry_after_us, reset_after_us}, as an array or packed as
--   four big-endian doubles (struct '>dddd'; every number is a whole one below 2^53), which
--   costs the server less than building an array reply. After an admitted hit the numbers
--   say what is left after it; otherwise the state now, unchanged. A counter lives while the
--   server's ms clock is at most its expiry time, so it is gone PTTL + 1 ms from now: every
--   time is rounded up to that, and waiting it is always enough.
-- A hit runs INCRBY and PTTL (a window's first hit: INCRBY, TIME and PEXPIREAT); a refused hit
-- undoes its INCRBY with a DECRBY, so it consumes nothing; a peek runs GET and PTTL.
local key = KEYS[1]
local cost = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])

local function reply(allowed, remaining, retry, reset)
  if ARGV[4] == '1' then
    return struct.pack('>dddd', allowed, remaining, retry, reset)
  end
  return {allowed, remaining, retry, reset}
end

if cost == 0 then
  local used = tonumber(redis.call('GET', key))
  if not used then
    return reply(1, limit, 0, 0)
  end
  local reset = (redis.call('PTTL', key) + 1) * 1000
  if used < limit then
    return reply(1, limit - used, 0, reset)
  end
  return reply(0, 0, reset, reset)
end

local used = redis.call('INCRBY', key, cost)
local ttl = -1
if used > cost then
  ttl = redis.call('PTTL', key)
end
local reset
if ttl >= 0 then
  reset = (ttl + 1) * 1000
else
  -- the window's first hit (or a counter that lost its expiry): it lives to the window's end
  local now = redis.call('TIME')
  local window = tonumber(ARGV[3])
  local now_ms = now[1] * 1000 + math.floor(now[2] / 1000)
  local ends = now_ms - now_ms % window + window
  redis.call('PEXPIREAT', key, ends)
  reset = (ends + 1) * 1000 - (now[1] * 1000000 + now[2])
end
if used > limit then
  redis.call('DECRBY', key, cost)
  used = used - cost
  if used > limit then
    used = limit -- the limit was lowered under a named key: nothing remains
  end
  return reply(0, limit - used, reset, reset)
end
return reply(1, limit - used, 0, reset)
