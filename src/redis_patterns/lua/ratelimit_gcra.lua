-- Rate limiting, GCRA and token bucket: one hit (or peek) against one limit, on server time.
-- A token bucket of capacity C refilled at r tokens per second is the generic cell rate
-- algorithm with burst C and one unit every 1/r s: both store one number, the theoretical
-- arrival time (when the bucket is full again), and the backlog tat - now is what is used.
-- KEYS[1] the theoretical arrival time: a string, µs on the server's clock; it expires then
-- ARGV[1] cost: units the hit consumes (1 <= cost <= burst, checked by the client); 0 for a
--         peek, which says whether a hit of cost 1 would pass and writes nothing
-- ARGV[2] burst (capacity), <= 10^15
-- ARGV[3] emission interval: µs per unit (burst * interval <= 10^15)
-- ARGV[4] '1': the reply packed into one string, else an array
-- returns {allowed (1/0), remaining, retry_after_us, reset_after_us, now_us}, as an array or
--   packed as five big-endian doubles (struct '>ddddd'; every number is a whole one below
--   2^53), which costs the server less than building an array reply. After an admitted hit
--   the numbers say what is left after it; otherwise the state now, unchanged. Durations are
--   whole µs, rounded up, so that waiting them is always enough; now_us is the server time
--   used.
-- Everything is computed on the backlog (at most the horizon, burst * interval), not on
-- absolute times (~2^51 µs, where a double's step is 0.25 µs), so a fresh full burst is exact.
-- A hit runs TIME, GET and SET ... PX; a refusal or a peek TIME and GET.
local key = KEYS[1]
local cost = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local interval = tonumber(ARGV[3])
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

local backlog = (tonumber(redis.call('GET', key)) or now) - now
if backlog < 0 then
  backlog = 0
end
local horizon = burst * interval
local units = cost
if cost == 0 then
  units = 1
end
local after = backlog + units * interval
if after - horizon > EPSILON or cost == 0 then
  local remaining = math.floor((horizon - backlog) / interval + EPSILON)
  if remaining < 0 then
    remaining = 0
  end
  if after - horizon > EPSILON then
    return reply(0, remaining, math.ceil(after - horizon), math.ceil(backlog))
  end
  return reply(1, remaining, 0, math.ceil(backlog))
end
local tat = now + after
if tat - now < after then
  -- rounded down to the double's step: round up instead, so storing never frees capacity
  local _, exponent = math.frexp(tat)
  tat = tat + 2 ^ (exponent - 53)
end
-- a number argument reaches the server in its shortest exact form (%.17g on Redis 6.2)
redis.call('SET', key, tat, 'PX', math.ceil(after / 1000))
local remaining = math.floor((horizon - after) / interval + EPSILON)
if remaining < 0 then
  remaining = 0
end
return reply(1, remaining, 0, math.ceil(after))
