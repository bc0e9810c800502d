-- The first half of a big value's store, cache_set without the payload (see below)
-- KEYS[1] the entry
-- KEYS[2] the recompute lock
-- KEYS[3] the namespace generation (stamped into the entry; absent = "0")
-- KEYS[4] the scratch key (the entry's slot): the header, then the APPENDed payload
-- ARGV[1] format tag (the serializer's name, or "int" for an integer stored as decimal text)
-- ARGV[2] soft ttl (ms): the entry is fresh until now + this; -1 = no expiry at all
-- ARGV[3] stale window (ms): the entry is kept this much longer, served while one caller refreshes
-- ARGV[4] loader duration (ms), stored for xfetch
-- ARGV[5] token: a loader's (store only while it holds the lock), "warm:..." or "" (a plain set)
-- ARGV[6] generation the loader read under ("" = any): a `clear` since then drops its store
-- ARGV[7] 1 = only if absent (add): store only when no fresh entry of this generation exists
-- ARGV[8] scratch ttl (ms) of an entry without expiry (the commit persists it)
-- returns 1 when the scratch key holds the header (the commit stores), 0 when dropped
--
-- The block MULTI / SET scratch "" PX <ms> NX / this / APPEND scratch <payload> /
-- cache_set_commit / EXEC stores what cache_set stores, but the value never passes through Lua
-- (issue 16). Every decision of cache_set is taken here; this only writes the entry's header to the scratch key, and the
-- commit stores what the scratch key then holds, or nothing. What a store changes besides (the
-- lock, the entry, the invalidation) is the commit's: if the commit did not run (NOSCRIPT),
-- the block sent again decides the same.
local tag = ARGV[1]
local soft_ttl = tonumber(ARGV[2])
local stale = tonumber(ARGV[3])
local delta = ARGV[4]
local token = ARGV[5]
local expected = ARGV[6]
local only_absent = ARGV[7] == '1'
local forever_px = tonumber(ARGV[8])

local generation = redis.call('GET', KEYS[3]) or '0'
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
if only_absent then
  -- The header only (it fits in 128 bytes): the old value stays out of Lua too.
  local head = redis.call('GETRANGE', KEYS[1], 0, 127)
  local soft, written = string.match(head, '^rp2:[^:]*:=?(%d+):%d+:(%d+):')
  if written == generation and (soft == '0' or tonumber(soft) > now) then
    return 0
  end
end
if token ~= '' then
  local holder = redis.call('GET', KEYS[2])
  local warming = holder == false and string.sub(token, 1, 5) == 'warm:'
  if holder ~= token and not warming then
    return 0
  end
  if expected ~= '' and expected ~= generation then
    -- Dropped, and the lock let go as cache_set does; run again, this decides the same.
    if holder then
      redis.call('DEL', KEYS[2])
    end
    return 0
  end
end
local soft = '0'
if soft_ttl >= 0 then
  soft = string.format('%.0f', now + soft_ttl)
  if stale == 0 then
    soft = '=' .. soft -- soft and hard expiry coincide: present means fresh (see cache_get)
  end
end
local header = 'rp2:' .. tag .. ':' .. soft .. ':' .. delta .. ':' .. generation .. ':'
-- The entry's hard expiry already: RENAME keeps it.
local px = forever_px
if soft_ttl >= 0 then
  px = soft_ttl + stale
end
redis.call('SET', KEYS[4], header, 'PX', px)
return 1
