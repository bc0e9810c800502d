-- Rate limiting: decide one hit against one or more limits of one client, on server time.
-- Every limit is evaluated first; state is written only when ALL of them allow the hit (mode
-- 'hit'), so a refused hit consumes from none. 'peek' never writes.
-- KEYS[i] state of limit i; all keys share the limited key's hash tag (one slot)
-- ARGV[1] mode: 'hit' or 'peek'
-- ARGV[2] cost: units the hit consumes (1 <= cost <= every limit's capacity, checked by the client)
-- ARGV[3i], ARGV[3i+1], ARGV[3i+2] limit i: algorithm, then two parameters:
--   'fw'   fixed window             limit, window (microseconds)
--   'sl'   sliding log (sorted set) limit (<= 5,000), window (microseconds)
--   'sw'   sliding window counter   limit, window (microseconds)
--   'tb'   token bucket             capacity, refill interval (microseconds per token)
--   'gcra' generic cell rate        burst, emission interval (microseconds per unit)
-- returns {now_us, all_allowed (1/0), then per limit: allowed (1/0), remaining,
--   retry_after_us, reset_after_us}. After a consumed hit the numbers are those after it;
--   otherwise (peek, or a refusal by any limit) they describe the state now, unchanged.
--   Durations are whole microseconds, rounded up so that waiting them is always enough.
-- The client bounds the inputs so that every call is exact in doubles and takes the same
-- small work whatever the cost: counts <= 10^15, windows, periods and bucket refill times
-- <= 10^15 µs, at most 16 limits, and at most 5,000 sliding-log members in one call.
local mode = ARGV[1]
local cost = tonumber(ARGV[2])

local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
-- Float comparisons get a margin far below anything observable, so that waiting exactly the
-- retry_after we computed is never refused by a rounding error.
local EPSILON = 1e-6

local function int(x)
  return string.format('%d', x)
end

local function ms_ceil(us)
  return math.max(1, math.ceil(us / 1000))
end

-- Each check returns a table:
--   ok: this limit allows the hit
--   rem_after, reset_after: remaining and time to full reset if the hit is consumed
--   rem_now, reset_now: the same without consuming; retry: wait before a refused hit can pass
--   commit: a function writing the consumed state (called only when every limit allows)

-- The state of each algorithm is the one its own lean script (ratelimit_<algorithm>.lua) keeps,
-- so a limit may be hit alone and inside a MultiLimit on the same key.

local function fixed_window(key, limit, window)
  -- a string counter per window, expiring at the window's end (see ratelimit_fixed_window.lua)
  local used = tonumber(redis.call('GET', key))
  local ttl = -1
  if used then
    ttl = redis.call('PTTL', key)
  else
    used = 0
  end
  local reset, ends
  if ttl >= 0 then
    reset = (ttl + 1) * 1000
  else
    -- a new window (or a counter that lost its expiry): it lasts to the window's end
    local now_ms = math.floor(now / 1000)
    local window_ms = window / 1000
    ends = now_ms - now_ms % window_ms + window_ms
    reset = (ends + 1) * 1000 - now
  end
  local r = {ok = used + cost <= limit, rem_now = limit - used, reset_now = 0, retry = reset}
  if used > 0 then r.reset_now = reset end
  r.rem_after = limit - used - cost
  r.reset_after = reset
  r.commit = function()
    redis.call('INCRBY', key, cost)
    if ends then
      redis.call('PEXPIREAT', key, ends)
    end
  end
  return r
end

-- The sliding log keeps one member per admitted hit, whatever its cost: score = the hit's
-- server time (µs), member = '<total>:<cost>', where total counts every unit admitted on this
-- key so far, this hit's included (modulo TOTAL_MOD, far above the most the set can hold, so
-- members stay unique). The units in the window are then the newest total minus the total
-- before the window's oldest member: a few O(log n) lookups, never a loop over members or units.
-- Scores strictly increase (a hit in the same µs as the previous one, or after the clock
-- stepped back, is stamped 1 µs after it), so rank order is arrival order; a later stamp only
-- keeps a hit counted longer. The set never holds more members than the limit (<= 5,000,
-- checked by the client), which bounds every trim, expiry and DEL of the key.
local TOTAL_MOD = 1e15

local function log_total(member)
  return tonumber(string.match(member, '^%d+'))
end

local function sliding_log(key, limit, window)
  local floor = now - window
  local used, newest_total, stamp, base = 0, 0, now, 0
  local newest = redis.call('ZRANGE', key, -1, -1, 'WITHSCORES')
  local r = {rem_now = limit, reset_now = 0, retry = 0}
  if newest[1] then
    newest_total = log_total(newest[1])
    local newest_at = tonumber(newest[2])
    stamp = math.max(now, newest_at + 1)
    if newest_at > floor then
      -- the oldest member in the window, and the total before it
      local oldest = redis.call('ZRANGEBYSCORE', key, '(' .. int(floor), '+inf', 'LIMIT', 0, 1)
      local total, c = string.match(oldest[1], '^(%d+):(%d+)$')
      base = tonumber(total) - tonumber(c)
      used = (newest_total - base) % TOTAL_MOD
      r.rem_now = limit - used
      r.reset_now = newest_at + window - now
    end
  end
  r.ok = used + cost <= limit
  if not r.ok then
    -- the hit passes once the members holding the oldest (used + cost - limit) units in the
    -- window have left it: binary search, over ranks, for the first whose total reaches that
    local need = used + cost - limit
    local lo = redis.call('ZCOUNT', key, '-inf', int(floor))
    local hi = redis.call('ZCARD', key) - 1
    while lo < hi do
      local mid = math.floor((lo + hi) / 2)
      if (log_total(redis.call('ZRANGE', key, mid, mid)[1]) - base) % TOTAL_MOD >= need then
        hi = mid
      else
        lo = mid + 1
      end
    end
    local entry = redis.call('ZRANGE', key, lo, lo, 'WITHSCORES')
    r.retry = math.max(1, tonumber(entry[2]) + window - now)
  end
  r.rem_after = limit - used - cost
  r.reset_after = stamp + window - now
  r.commit = function()
    redis.call('ZREMRANGEBYSCORE', key, '-inf', int(floor))
    redis.call('ZADD', key, int(stamp), int((newest_total + cost) % TOTAL_MOD) .. ':' .. int(cost))
    redis.call('PEXPIRE', key, ms_ceil(r.reset_after))
  end
  return r
end

local function sliding_window(key, limit, window)
  local index = math.floor(now / window)
  local state = redis.call('HMGET', key, 'w', 'c', 'p')
  local w = tonumber(state[1])
  local cur, prev = 0, 0
  if w and w > index then
    index = w -- the server clock stepped back: stay in the stored window (elapsed 0 below)
  end
  if w == index then
    cur, prev = tonumber(state[2]) or 0, tonumber(state[3]) or 0
  elseif w == index - 1 then
    prev = tonumber(state[2]) or 0
  end
  local elapsed = math.max(0, now - index * window)
  -- the previous window's count, weighted by how much of it the sliding window still covers
  local estimate = prev * (window - elapsed) / window + cur
  local r = {ok = estimate + cost <= limit + EPSILON}
  r.rem_now = math.max(0, math.floor(limit - estimate + EPSILON))
  r.rem_after = math.max(0, math.floor(limit - estimate - cost + EPSILON))
  if cur > 0 then
    r.reset_now = (index + 2) * window - now
  elseif prev > 0 then
    r.reset_now = (index + 1) * window - now
  else
    r.reset_now = 0
  end
  r.reset_after = (index + 2) * window - now
  r.retry = 0
  if not r.ok then
    if cur + cost <= limit then
      -- later in this window, once the previous window's weight has decayed enough
      r.retry = window * (1 - (limit - cur - cost) / prev) - elapsed
    else
      -- in the next window, where this window's count becomes the decaying one
      r.retry = window - elapsed + window * (1 - (limit - cost) / cur)
    end
    r.retry = math.max(1, r.retry)
  end
  r.commit = function()
    redis.call('HSET', key, 'w', int(index), 'c', int(cur + cost), 'p', int(prev))
    redis.call('PEXPIRE', key, ms_ceil(r.reset_after))
  end
  return r
end

local function gcra(key, burst, interval)
  -- tat: theoretical arrival time; the bucket is empty when tat - now reaches the horizon.
  -- Everything is computed on the backlog (tat - now, at most the horizon), not on absolute
  -- times (~2^51 µs, where a double's step is 0.25 µs), so a fresh full burst is exact.
  local horizon = burst * interval
  local backlog = math.max(0, (tonumber(redis.call('GET', key)) or now) - now)
  local after = backlog + cost * interval
  local r = {ok = after - horizon <= EPSILON}
  r.rem_now = math.max(0, math.floor((horizon - backlog) / interval + EPSILON))
  r.rem_after = math.max(0, math.floor((horizon - after) / interval + EPSILON))
  r.reset_now = backlog
  r.reset_after = after
  r.retry = 0
  if not r.ok then
    r.retry = after - horizon
  end
  r.commit = function()
    local tat = now + after
    if tat - now < after then
      -- rounded down to the double's step: round up instead, so storing never frees capacity
      local _, exponent = math.frexp(tat)
      tat = tat + 2 ^ (exponent - 53)
    end
    redis.call('SET', key, string.format('%.17g', tat), 'PX', ms_ceil(after))
  end
  return r
end

-- a token bucket is GCRA with burst = capacity and one unit every 1 / refill rate
local checks = {fw = fixed_window, sl = sliding_log, sw = sliding_window, tb = gcra, gcra = gcra}

local results = {}
local all_ok = true
for i = 1, #KEYS do
  local algorithm = ARGV[3 * i]
  local check = checks[algorithm]
  if not check then
    return redis.error_reply('ERR unknown rate limit algorithm ' .. tostring(algorithm))
  end
  local r = check(KEYS[i], tonumber(ARGV[3 * i + 1]), tonumber(ARGV[3 * i + 2]))
  results[i] = r
  all_ok = all_ok and r.ok
end

local consume = all_ok and mode == 'hit'
local reply = {int(now), all_ok and 1 or 0}
for i = 1, #KEYS do
  local r = results[i]
  if consume then
    r.commit()
    reply[#reply + 1] = 1
    reply[#reply + 1] = math.max(0, r.rem_after)
    reply[#reply + 1] = 0
    reply[#reply + 1] = math.ceil(math.max(0, r.reset_after))
  else
    reply[#reply + 1] = r.ok and 1 or 0
    reply[#reply + 1] = math.max(0, r.rem_now)
    reply[#reply + 1] = r.ok and 0 or math.ceil(r.retry)
    reply[#reply + 1] = math.ceil(math.max(0, r.reset_now))
  end
end
return reply
