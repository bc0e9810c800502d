-- KEYS[1] the entry
-- KEYS[2] the namespace generation (absent = "0")
-- ARGV[1] new soft ttl (ms) from now; -1 = no expiry at all
-- ARGV[2] stale window (ms) kept after the soft expiry
-- ARGV[3] invalidation channel ("" = no near caches to tell)
-- ARGV[4] origin (this writer's id, for its own near cache)
-- returns 1 if a live entry (fresh, of the current generation) got the new expiry, else 0
local soft_ttl = tonumber(ARGV[1])
local stale = tonumber(ARGV[2])
local channel = ARGV[3]
local origin = ARGV[4]

local entry = redis.call('GET', KEYS[1])
if not entry then
  return 0
end
local generation = redis.call('GET', KEYS[2]) or '0'
local _, e, tag, soft, delta = string.find(entry, '^rp2:([^:]*):=?(%d+):(%d+):' .. generation .. ':')
if not e then
  return 0
end
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
if soft ~= '0' and tonumber(soft) <= now then
  return 0
end
local rest = string.sub(entry, e + 1)
if soft_ttl >= 0 then
  local mark = ''
  if stale == 0 then
    mark = '=' -- soft and hard expiry coincide: present means fresh (see cache_get)
  end
  local header = 'rp2:' .. tag .. ':' .. mark .. string.format('%.0f', now + soft_ttl) .. ':'
    .. delta
  redis.call('SET', KEYS[1], header .. ':' .. generation .. ':' .. rest, 'PX', soft_ttl + stale)
else
  redis.call('SET', KEYS[1], 'rp2:' .. tag .. ':0:' .. delta .. ':' .. generation .. ':' .. rest)
end
if channel ~= '' then
  redis.call('PUBLISH', channel, origin .. ':' .. KEYS[1])
end
return 1
