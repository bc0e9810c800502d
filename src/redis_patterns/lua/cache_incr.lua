-- KEYS[1] the entry
-- KEYS[2] the recompute lock
-- KEYS[3] the namespace generation (absent = "0")
-- ARGV[1] the cache's format tag: entries tagged "int", or "json" with an integer payload, count
-- ARGV[2] delta (decimal integer, |delta| < 2^53)
-- ARGV[3] 1 = create a missing entry holding delta, 0 = report it missing
-- ARGV[4] soft ttl (ms) of a created entry; -1 = no expiry
-- ARGV[5] stale window (ms) of a created entry
-- ARGV[6] lock ttl (ms): tombstone lifetime when a loader is running
-- ARGV[7] invalidation channel ("" = no near caches to tell)
-- ARGV[8] origin (this writer's id, for its own near cache)
-- returns {1, new value as decimal text}, {0, false} missing (not created), {-1, false} the value
-- is not an integer, {-2, false} the result would leave the exact range of a double (2^53)
-- An existing entry keeps its expiry (soft and hard) and its header; only the payload changes.
local own = ARGV[1]
local delta = tonumber(ARGV[2])
local create = ARGV[3] == '1'
local soft_ttl = tonumber(ARGV[4])
local stale = tonumber(ARGV[5])
local lock_ttl = tonumber(ARGV[6])
local channel = ARGV[7]
local origin = ARGV[8]
local LIMIT = 9007199254740991

local generation = redis.call('GET', KEYS[3]) or '0'
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)

local function text(n)
  if n == 0 then
    return '0'
  end
  return string.format('%.0f', n)
end

local function written()
  if redis.call('EXISTS', KEYS[2]) == 1 then
    -- A loader that started before this write must not overwrite it with what it read earlier.
    redis.call('SET', KEYS[2], '!', 'PX', lock_ttl)
  end
  if channel ~= '' then
    redis.call('PUBLISH', channel, origin .. ':' .. KEYS[1])
  end
end

local entry = redis.call('GET', KEYS[1])
local header, tag, soft, payload
if entry then
  local _, e
  _, e, tag, soft = string.find(entry, '^rp2:([^:]*):=?(%d+):%d+:' .. generation .. ':')
  if e and (soft == '0' or tonumber(soft) > now) and (tag == 'int' or tag == own) then
    header = string.sub(entry, 1, e)
    payload = string.sub(entry, e + 1)
  end
end
if not header then
  if not create then
    return {0, false}
  end
  local new_tag = 'int'
  if own == 'json' then
    new_tag = 'json'
  end
  local value = text(delta)
  if soft_ttl >= 0 then
    local mark = ''
    if stale == 0 then
      mark = '=' -- soft and hard expiry coincide: present means fresh (see cache_get)
    end
    header = 'rp2:' .. new_tag .. ':' .. mark .. string.format('%.0f', now + soft_ttl) .. ':0:'
    redis.call('SET', KEYS[1], header .. generation .. ':' .. value, 'PX', soft_ttl + stale)
  else
    redis.call('SET', KEYS[1], 'rp2:' .. new_tag .. ':0:0:' .. generation .. ':' .. value)
  end
  written()
  return {1, value}
end
if (tag ~= 'int' and tag ~= 'json') or not string.match(payload, '^%-?%d+$') then
  return {-1, false}
end
if #payload > 17 then
  return {-2, false}
end
local old = tonumber(payload)
local new = old + delta
if math.abs(old) > LIMIT or math.abs(new) > LIMIT then
  return {-2, false}
end
local value = text(new)
redis.call('SET', KEYS[1], header .. value, 'KEEPTTL')
written()
return {1, value}
