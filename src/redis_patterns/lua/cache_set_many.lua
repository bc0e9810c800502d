-- KEYS[1] the namespace generation (stamped into every entry; absent = "0")
-- KEYS[2i], KEYS[2i+1] the i-th entry and its recompute lock (all in one slot on a cluster)
-- ARGV[1] stale window (ms)
-- ARGV[2] lock ttl (ms): how long the tombstone of a plain set keeps a running loader from storing
-- ARGV[3] invalidation channel ("" = no near caches to tell)
-- ARGV[4] origin: the writer's id, published as "<origin>:<key>"
-- ARGV[5] token: a loader's token (store each only while it still holds its lock), or ""
-- ARGV[6] generation the loader read under ("" = any): a `clear` since then drops its stores
-- ARGV[7+4(i-1)..] per key: format tag, payload, soft ttl (ms; -1 = no expiry), loader ms
-- returns per key 1 stored, 0 dropped (see cache_set)
local stale = tonumber(ARGV[1])
local lock_ttl = tonumber(ARGV[2])
local channel = ARGV[3]
local origin = ARGV[4]
local token = ARGV[5]
local expected = ARGV[6]

local generation = redis.call('GET', KEYS[1]) or '0'
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local out = {}
local n = (#KEYS - 1) / 2
for i = 1, n do
  local key, lock = KEYS[2 * i], KEYS[2 * i + 1]
  local base = 7 + 4 * (i - 1)
  local tag, payload, soft_ttl, delta = ARGV[base], ARGV[base + 1], tonumber(ARGV[base + 2]),
    ARGV[base + 3]
  local store = 1
  local holder = redis.call('GET', lock)
  if token ~= '' then
    if holder ~= token then
      store = 0 -- not its lock, or none at all: see cache_set
    else
      if holder then
        redis.call('DEL', lock)
      end
      if expected ~= '' and expected ~= generation then
        store = 0
      end
    end
  elseif holder then
    redis.call('SET', lock, '!', 'PX', lock_ttl)
  end
  if store == 1 then
    if soft_ttl >= 0 then
      local mark = ''
      if stale == 0 then
        mark = '=' -- soft and hard expiry coincide: present means fresh (see cache_get)
      end
      local header = 'rp2:' .. tag .. ':' .. mark .. string.format('%.0f', now + soft_ttl) .. ':'
        .. delta
      redis.call('SET', key, header .. ':' .. generation .. ':' .. payload, 'PX', soft_ttl + stale)
    else
      redis.call('SET', key, 'rp2:' .. tag .. ':0:' .. delta .. ':' .. generation .. ':' .. payload)
    end
    if channel ~= '' then
      redis.call('PUBLISH', channel, origin .. ':' .. key)
    end
  end
  out[i] = store
end
return out
