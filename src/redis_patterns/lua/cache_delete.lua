-- KEYS[1] the entry
-- KEYS[2] the recompute lock
-- ARGV[1] lock ttl (ms): how long the tombstone keeps a running loader from storing
-- ARGV[2] invalidation channel ("" = no near caches to tell)
-- ARGV[3] origin: the writer's id, published as "<origin>:<key>" so it can skip its own message
-- returns 1 if an entry was deleted, else 0
local lock_ttl = tonumber(ARGV[1])
local channel = ARGV[2]
local origin = ARGV[3]
local deleted = redis.call('DEL', KEYS[1])
if redis.call('EXISTS', KEYS[2]) == 1 then
  -- A loader is running: it read before this delete, so it must not store what it read.
  redis.call('SET', KEYS[2], '!', 'PX', lock_ttl)
end
if channel ~= '' then
  redis.call('PUBLISH', channel, origin .. ':' .. KEYS[1])
end
return deleted
