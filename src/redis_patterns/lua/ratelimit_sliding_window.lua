-- Rate limiting, sliding window counter: one hit (or peek) against one limit, on server time.
-- KEYS[1] hash: 'w' the current window's index (server time in µs / window), 'c' the units
--         admitted in it, 'p' those admitted in the window before; it expires at the end of
--         the next window
-- ARGV[1] cost: units the hit consumes (1 <= cost <= limit, checked by the client); 0 for a
--         peek, which says whether a hit of cost 1 would pass and writes nothing
-- ARGV[2] limit (<= 10^15)
-- ARGV[3] window in µs (a whole number of ms)
-- ARGV[4] '1': the reply packed into one string, else an array
-- returns {allowed (1/0), remaining, retry_after_us, reset_after_us, now_us}, as an array or
--   packed as five big-endian doubles (struct '>ddddd'; every number is a whole one below
--   2^53), which costs the server less than building an array reply. After an admitted
--   hit, what is left after it; otherwise the state now, unchanged. Durations are whole µs,
--   rounded up, so that waiting them is always enough; now_us is the server time used.
-- A hit runs TIME, HMGET and HINCRBY (the first hit of a window: HSET and PEXPIREAT instead);
-- a refusal or a peek TIME and HMGET.
local key = KEYS[1]
local cost = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
local window = tonumber(ARGV[3])
-- a margin far below anything observable, so that waiting exactly the retry_after computed
-- here is never refused by a rounding error
local EPSILON = 1e-6

local clock = redis.call('TIME')
local now = clock[1] * 1000000 + clock[2]

local function reply(allowed, remaining, retry, reset)
  if ARGV[4] == '1' then
    return struct.pack('>ddddd', allowed, remaining, retry, reset, now)
  end
  return {allowed, remaining, retry, reset, now}
end

local index = math.floor(now / window)
local state = redis.call('HMGET', key, 'w', 'c', 'p')
local stored = tonumber(state[1])
local cur, prev = 0, 0
if stored and stored >= index then
  -- stored > index: the server clock stepped back; stay in the stored window
  index = stored
  cur, prev = tonumber(state[2]) or 0, tonumber(state[3]) or 0
elseif stored == index - 1 then
  prev = tonumber(state[2]) or 0
end
local elapsed = now - index * window
if elapsed < 0 then
  elapsed = 0
end
-- the previous window's count, weighted by how much of it the sliding window still covers
local estimate = prev * (window - elapsed) / window + cur
local units = cost
if cost == 0 then
  units = 1
end

if estimate + units > limit + EPSILON or cost == 0 then
  local remaining = math.floor(limit - estimate + EPSILON)
  if remaining < 0 then
    remaining = 0
  end
  local reset = 0
  if cur > 0 then
    reset = (index + 2) * window - now
  elseif prev > 0 then
    reset = (index + 1) * window - now
  end
  if estimate + units <= limit + EPSILON then
    return reply(1, remaining, 0, reset)
  end
  local retry
  if cur + units <= limit then
    -- later in this window, once the previous window's weight has decayed enough
    retry = window * (1 - (limit - cur - units) / prev) - elapsed
  else
    -- in the next window, where this window's count becomes the decaying one
    retry = window - elapsed + window * (1 - (limit - units) / cur)
  end
  if retry < 1 then
    retry = 1
  end
  return reply(0, remaining, math.ceil(retry), math.ceil(reset))
end

if stored == index then
  redis.call('HINCRBY', key, 'c', cost)
else
  redis.call('HSET', key, 'w', index, 'c', cost, 'p', prev)
  redis.call('PEXPIREAT', key, (index + 2) * window / 1000)
end
local remaining = math.floor(limit - estimate - cost + EPSILON)
if remaining < 0 then
  remaining = 0
end
return reply(1, remaining, 0, (index + 2) * window - now)
