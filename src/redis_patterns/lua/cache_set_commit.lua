-- The second half of a big value's store (see cache_set_prep and below)
-- KEYS[1] the scratch key
-- KEYS[2] the entry
-- KEYS[3] the recompute lock
-- ARGV[1] payload size (bytes)
-- ARGV[2] 1 = the entry has no expiry (PERSIST it)
-- ARGV[3] token: a loader's, "warm:..." or "" (a plain set), as given to the prep
-- ARGV[4] lock ttl (ms): how long the tombstone of a plain set keeps a running loader from storing
-- ARGV[5] invalidation channel ("" = no near caches to tell)
-- ARGV[6] origin: the writer's id, published as "<origin>:<key>" so it can skip its own message
-- returns 1 when stored, 0 when dropped
--
-- After APPEND the scratch key holds the header the prep wrote and the payload, and becomes
-- the entry (RENAME: the value is moved, never copied into Lua). It is stored only if it is
-- exactly a header and this payload: when the prep dropped the store, or did not run
-- (NOSCRIPT), APPEND made it the payload alone, or a leftover and the payload, and it is
-- deleted instead.
local size = tonumber(ARGV[1])
local forever = ARGV[2] == '1'
local token = ARGV[3]
local lock_ttl = tonumber(ARGV[4])
local channel = ARGV[5]
local origin = ARGV[6]

local head = redis.call('GETRANGE', KEYS[1], 0, 127)
local header = string.match(head, '^rp2:[^:]*:=?%d+:%d+:%d+:')
if not header or redis.call('STRLEN', KEYS[1]) ~= #header + size then
  redis.call('DEL', KEYS[1])
  return 0
end
if token ~= '' then
  -- The prep stored for the lock's holder only (or a warm token, where no lock is held).
  redis.call('DEL', KEYS[3])
elseif redis.call('EXISTS', KEYS[3]) == 1 then
  -- A loader that started before this write must not overwrite it with what it read earlier.
  redis.call('SET', KEYS[3], '!', 'PX', lock_ttl)
end
redis.call('RENAME', KEYS[1], KEYS[2])
if forever then
  redis.call('PERSIST', KEYS[2])
end
if channel ~= '' then
  redis.call('PUBLISH', channel, origin .. ':' .. KEYS[2])
end
return 1
