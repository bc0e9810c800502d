-- Rate limiting: decide one hit against one or more limits of one client, on server time.
-- Every limit is evaluated first; state is written only when ALL of them allow the hit (mode
-- 'hit'), so a refused hit consumes from none. 'peek' never writes.
-- KEYS[i] state of limit i; all keys share the limited key's hash tag (one slot)
-- ARGV[1] mode: 'hit' or 'peek'
-- ARGV[2] cost: units the hit consumes (1 <= cost <= every limit's capacity, checked by the client)
-- ARGV[3i], ARGV[3i+1], ARGV[3i+2] limit i: algorithm, then two parameters:
--   'fw'   fixed window             limit, window (microseconds)
--   'sl'   sliding log (sorted set) limit, window (microseconds)
--   'sw'   sliding window counter   limit, window (microseconds)
--   'tb'   token bucket             capacity, refill rate (tokens per microsecond)
--   'gcra' generic cell rate        burst, emission interval (microseconds per unit)
-- returns {now_us, all_allowed (1/0), then per limit: allowed (1/0), remaining,
--   retry_after_us, reset_after_us}. After a consumed hit the numbers are those after it;
--   otherwise (peek, or a refusal by any limit) they describe the state now, unchanged.
--   Durations are whole microseconds, rounded up so that waiting them is always enough.
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

local function fixed_window(key, limit, window)
  local index = math.floor(now / window)
  local state = redis.call('HMGET', key, 'w', 'n')
  local w = tonumber(state[1])
  local used = 0
  -- w > index: the server clock stepped back; stay in the stored window rather than reset
  if w and w >= index then
    index = w
    used = tonumber(state[2]) or 0
  end
  local reset = (index + 1) * window - now
  local r = {ok = used + cost <= limit, rem_now = limit - used, reset_now = 0, retry = reset}
  if used > 0 then r.reset_now = reset end
  r.rem_after = limit - used - cost
  r.reset_after = reset
  r.commit = function()
    redis.call('HSET', key, 'w', int(index), 'n', int(used + cost))
    redis.call('PEXPIRE', key, ms_ceil(reset))
  end
  return r
end

local function sliding_log(key, limit, window)
  local floor = now - window
  -- entries with score <= now - window are outside the window (removed when we next write)
  local used = redis.call('ZCOUNT', key, '(' .. int(floor), '+inf')
  local r = {ok = used + cost <= limit, rem_now = limit - used, reset_now = 0, retry = 0}
  if used > 0 then
    local newest = redis.call('ZRANGE', key, -1, -1, 'WITHSCORES')
    r.reset_now = math.max(0, tonumber(newest[2]) + window - now)
  end
  if not r.ok then
    -- the hit passes once the (used + cost - limit)-th oldest entry in the window leaves it
    local k = used + cost - limit
    local entry = redis.call('ZRANGEBYSCORE', key, '(' .. int(floor), '+inf', 'WITHSCORES',
      'LIMIT', k - 1, 1)
    r.retry = math.max(1, tonumber(entry[2]) + window - now)
  end
  r.rem_after = limit - used - cost
  r.reset_after = window
  r.commit = function()
    redis.call('ZREMRANGEBYSCORE', key, '-inf', int(floor))
    local n = 0
    for _ = 1, cost do
      -- members must be unique; two hits may share a microsecond
      while redis.call('ZSCORE', key, int(now) .. '-' .. n) do
        n = n + 1
      end
      redis.call('ZADD', key, int(now), int(now) .. '-' .. n)
      n = n + 1
    end
    redis.call('PEXPIRE', key, ms_ceil(window))
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

local function token_bucket(key, capacity, rate)
  local state = redis.call('HMGET', key, 't', 'ts')
  local tokens = capacity
  if state[1] then
    local elapsed = math.max(0, now - (tonumber(state[2]) or now))
    tokens = math.min(capacity, tonumber(state[1]) + elapsed * rate)
  end
  local after = math.max(0, tokens - cost)
  local r = {ok = tokens + EPSILON >= cost}
  r.rem_now = math.floor(tokens + EPSILON)
  r.rem_after = math.floor(after + EPSILON)
  r.reset_now = (capacity - tokens) / rate
  r.reset_after = (capacity - after) / rate
  r.retry = 0
  if not r.ok then
    r.retry = (cost - tokens) / rate
  end
  r.commit = function()
    redis.call('HSET', key, 't', string.format('%.17g', after), 'ts', int(now))
    -- once full again the bucket equals a missing key, so it may expire then
    redis.call('PEXPIRE', key, ms_ceil(r.reset_after))
  end
  return r
end

local function gcra(key, burst, interval)
  -- tat: theoretical arrival time; the bucket is empty when tat - now reaches burst * interval
  local tat = math.max(now, tonumber(redis.call('GET', key)) or now)
  local new_tat = tat + cost * interval
  local allow_at = new_tat - burst * interval
  local r = {ok = allow_at - now <= EPSILON}
  r.rem_now = math.max(0, math.floor((now + burst * interval - tat) / interval + EPSILON))
  r.rem_after = math.max(0, math.floor((now + burst * interval - new_tat) / interval + EPSILON))
  r.reset_now = tat - now
  r.reset_after = new_tat - now
  r.retry = 0
  if not r.ok then
    r.retry = allow_at - now
  end
  r.commit = function()
    redis.call('SET', key, string.format('%.17g', new_tat), 'PX', ms_ceil(new_tat - now))
  end
  return r
end

local checks = {fw = fixed_window, sl = sliding_log, sw = sliding_window,
  tb = token_bucket, gcra = gcra}

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
