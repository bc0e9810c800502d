-- KEYS[1] the entry
-- KEYS[2] the recompute lock
-- KEYS[3] the namespace generation (stamped into the entry; absent = "0")
-- ARGV[1] format tag (the serializer's name, or "int" for an integer stored as decimal text)
-- ARGV[2] payload (serialized value)
-- ARGV[3] soft ttl (ms): the entry is fresh until now + this; -1 = no expiry at all
-- ARGV[4] stale window (ms): the entry is kept this much longer, served while one caller refreshes
-- ARGV[5] loader duration (ms), stored for xfetch
-- ARGV[6] token: a loader's (store only while it holds the lock), "warm:..." or "" (a plain set)
-- ARGV[7] lock ttl (ms): how long the tombstone of a plain set keeps a running loader from storing
-- ARGV[8] invalidation channel ("" = no near caches to tell)
-- ARGV[9] origin: the writer's id, published as "<origin>:<key>" so it can skip its own message
-- ARGV[10] generation the loader read under ("" = any): a `clear` since then drops its store
-- ARGV[11] 1 = only if absent (add): store only when no fresh entry of this generation exists
-- returns 1 when stored, 0 when dropped (a set, delete or clear happened since the loader
-- started, or, for add, the key holds a value)
local tag = ARGV[1]
local payload = ARGV[2]
local soft_ttl = tonumber(ARGV[3])
local stale = tonumber(ARGV[4])
local delta = ARGV[5]
local token = ARGV[6]
local lock_ttl = tonumber(ARGV[7])
local channel = ARGV[8]
local origin = ARGV[9]
local expected = ARGV[10]
local only_absent = ARGV[11] == '1'

local generation = redis.call('GET', KEYS[3]) or '0'
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
if only_absent then
  -- The header only (it fits in 128 bytes): a big old value stays out of Lua.
  local head = redis.call('GETRANGE', KEYS[1], 0, 127)
  local soft, written = string.match(head, '^rp2:[^:]*:=?(%d+):%d+:(%d+):')
  if written == generation and (soft == '0' or tonumber(soft) > now) then
    return 0
  end
end
local holder = redis.call('GET', KEYS[2])
if token ~= '' then
  -- For a loader, no lock at all is not its lock either: a later loader took it over a
  -- tombstone, stored a newer value and let it go; what this one read before must not win.
  -- A warm token stores only where no lock is held at all.
  local warming = holder == false and string.sub(token, 1, 5) == 'warm:'
  if holder ~= token and not warming then
    return 0
  end
  if holder then
    redis.call('DEL', KEYS[2])
  end
  if expected ~= '' and expected ~= generation then
    return 0
  end
elseif holder then
  -- A loader that started before this write must not overwrite it with what it read earlier.
  redis.call('SET', KEYS[2], '!', 'PX', lock_ttl)
end
local soft = '0'
if soft_ttl >= 0 then
  soft = string.format('%.0f', now + soft_ttl)
  if stale == 0 then
    soft = '=' .. soft -- soft and hard expiry coincide: present means fresh (see cache_get)
  end
end
local header = 'rp2:' .. tag .. ':' .. soft .. ':' .. delta .. ':' .. generation .. ':'
if soft_ttl >= 0 then
  redis.call('SET', KEYS[1], header .. payload, 'PX', soft_ttl + stale)
else
  redis.call('SET', KEYS[1], header .. payload)
end
if channel ~= '' then
  redis.call('PUBLISH', channel, origin .. ':' .. KEYS[1])
end
return 1
