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

-- Only the header is read (it fits in 128 bytes, see cache_set) and, when the new one has the
-- same length (the common case: the same digits, the same mark), written over the old in
-- place: the value itself never passes through Lua, whatever its size.
local head = redis.call('GETRANGE', KEYS[1], 0, 127)
local generation = redis.call('GET', KEYS[2]) or '0'
local _, e, tag, soft, delta = string.find(head, '^rp2:([^:]*):=?(%d+):(%d+):' .. generation .. ':')
if not e then
  return 0 -- missing, not an entry, or of an earlier generation
end
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
if soft ~= '0' and tonumber(soft) <= now then
  return 0
end
local header
if soft_ttl >= 0 then
  local mark = ''
  if stale == 0 then
    mark = '=' -- soft and hard expiry coincide: present means fresh (see cache_get)
  end
  header = 'rp2:' .. tag .. ':' .. mark .. string.format('%.0f', now + soft_ttl) .. ':' .. delta
else
  header = 'rp2:' .. tag .. ':0:' .. delta
end
header = header .. ':' .. generation .. ':'
if #header == e then
  redis.call('SETRANGE', KEYS[1], 0, header)
  if soft_ttl >= 0 then
    redis.call('PEXPIRE', KEYS[1], soft_ttl + stale)
  else
    redis.call('PERSIST', KEYS[1])
  end
else
  local rest = string.sub(redis.call('GET', KEYS[1]), e + 1)
  if soft_ttl >= 0 then
    redis.call('SET', KEYS[1], header .. rest, 'PX', soft_ttl + stale)
  else
    redis.call('SET', KEYS[1], header .. rest)
  end
end
if channel ~= '' then
  redis.call('PUBLISH', channel, origin .. ':' .. KEYS[1])
end
return 1
