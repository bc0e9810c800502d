-- Rate limiting, sliding log: one hit (or peek) against one limit, exact in every window.
-- KEYS[1] sorted set: one member per admitted hit, whatever its cost: '<total>:<cost>', where
--         total counts every unit admitted on this key so far, this hit's included (modulo
--         10^15); score = the hit's server time in µs. It expires a window after its newest.
-- ARGV[1] cost: units the hit consumes (1 <= cost <= limit, checked by the client); 0 for a
--         peek, which says whether a hit of cost 1 would pass and writes nothing
-- ARGV[2] limit (<= 5,000: the set never holds more members, which bounds every call)
-- ARGV[3] window in µs
-- ARGV[4] '1': the reply packed into one string, else an array
-- returns {allowed (1/0), remaining, retry_after_us, reset_after_us, now_us}, as an array or
--   packed as five big-endian doubles (struct '>ddddd'; every number is a whole one below
--   2^53), which costs the server less than building an array reply. After an admitted
--   hit, what is left after it; otherwise the state now, unchanged. Durations are whole µs,
--   rounded up, so that waiting them is always enough; now_us is the server time used.
-- The units in the window are the newest total minus the total before the window's oldest
-- member: a few O(log n) lookups, never a loop over members or units. Scores strictly increase
-- (a hit in the same µs as the previous one, or after the clock stepped back, is stamped 1 µs
-- after it), so rank order is arrival order. An admitted hit removes the members that left the
-- window, so the set never holds more than the limit. A hit runs TIME, ZRANGE (the newest),
-- ZRANGE (the two oldest; a ZRANGEBYSCORE when both left the window), ZADD and PEXPIRE, and a
-- ZREMRANGEBYSCORE when members left the window; a refusal searches the ranks for when it
-- would pass (ZCOUNT, ZCARD and at most ~13 ZRANGEs).
local key = KEYS[1]
local cost = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
local window = tonumber(ARGV[3])
local TOTAL_MOD = 1e15

local clock = redis.call('TIME')
local now = clock[1] * 1000000 + clock[2]

local function reply(allowed, remaining, retry, reset)
  if ARGV[4] == '1' then
    return struct.pack('>ddddd', allowed, remaining, retry, reset, now)
  end
  return {allowed, remaining, retry, reset, now}
end

local floor = now - window
local used, total, stamp, base, reset = 0, 0, now, 0, 0
local trim = false -- members left the window: remove them when the hit is admitted
local newest = redis.call('ZRANGE', key, -1, -1, 'WITHSCORES')
if newest[1] then
  total = tonumber(string.match(newest[1], '^%d+'))
  local newest_at = tonumber(newest[2])
  if newest_at >= now then
    stamp = newest_at + 1
  end
  if newest_at > floor then
    -- the oldest member in the window, and the total before it: usually the set's first or
    -- second member (none or one left the window since the last hit), else a search by score
    local first = redis.call('ZRANGE', key, 0, 1, 'WITHSCORES')
    local oldest = first[1]
    if tonumber(first[2]) <= floor then
      trim = true
      oldest = first[3]
      if tonumber(first[4]) <= floor then
        oldest = redis.call('ZRANGEBYSCORE', key, floor + 1, '+inf', 'LIMIT', 0, 1)[1]
      end
    end
    local before, units = string.match(oldest, '^(%d+):(%d+)$')
    base = before - units
    used = (total - base) % TOTAL_MOD
    reset = newest_at + window - now
  else
    trim = true -- every member left the window
  end
end
local units = cost
if cost == 0 then
  units = 1
end

if used + units > limit then
  -- the hit passes once the members holding the oldest (used + units - limit) units in the
  -- window have left it: binary search, over ranks, for the first whose total reaches that
  local need = used + units - limit
  local lo = redis.call('ZCOUNT', key, '-inf', floor)
  local hi = redis.call('ZCARD', key) - 1
  while lo < hi do
    local mid = math.floor((lo + hi) / 2)
    local member = redis.call('ZRANGE', key, mid, mid)[1]
    if (tonumber(string.match(member, '^%d+')) - base) % TOTAL_MOD >= need then
      hi = mid
    else
      lo = mid + 1
    end
  end
  local retry = redis.call('ZRANGE', key, lo, lo, 'WITHSCORES')[2] + window - now
  if retry < 1 then
    retry = 1
  end
  if used > limit then
    used = limit -- the limit was lowered under a named key: nothing remains
  end
  return reply(0, limit - used, retry, reset)
end
if cost == 0 then
  return reply(1, limit - used, 0, reset)
end
if trim then
  redis.call('ZREMRANGEBYSCORE', key, '-inf', floor)
end
redis.call('ZADD', key, stamp, string.format('%d:%d', (total + cost) % TOTAL_MOD, cost))
redis.call('PEXPIRE', key, math.ceil((stamp + window - now) / 1000))
return reply(1, limit - used - cost, 0, stamp + window - now)
