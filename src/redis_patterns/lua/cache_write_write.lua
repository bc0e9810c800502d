-- KEYS[1] the entry
-- KEYS[2] the recompute lock
-- KEYS[3] the write-behind stream
-- KEYS[4] the namespace generation (stamped into the entry; absent = "0")
-- ARGV[1] format tag (the serializer's name)
-- ARGV[2] payload (serialized value)
-- ARGV[3] soft ttl (ms)
-- ARGV[4] stale window (ms)
-- ARGV[5] lock ttl (ms): tombstone lifetime when a loader is running
-- ARGV[6] invalidation channel ("" = no near caches to tell)
-- ARGV[7] origin (this writer's id, for its own near cache)
-- ARGV[8] the user's key (what the flusher hands to flush())
-- returns the stream entry id: the cache write and its durable record happen together or not at all
local tag = ARGV[1]
local payload = ARGV[2]
local soft_ttl = tonumber(ARGV[3])
local stale = tonumber(ARGV[4])
local lock_ttl = tonumber(ARGV[5])
local channel = ARGV[6]
local origin = ARGV[7]
local key = ARGV[8]

if redis.call('EXISTS', KEYS[2]) == 1 then
  -- A loader that started before this write must not overwrite it with what it read earlier.
  redis.call('SET', KEYS[2], '!', 'PX', lock_ttl)
end
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local generation = redis.call('GET', KEYS[4]) or '0'
local header = 'rp2:' .. tag .. ':' .. string.format('%.0f', now + soft_ttl) .. ':0:' .. generation .. ':'
redis.call('SET', KEYS[1], header .. payload, 'PX', soft_ttl + stale)
if channel ~= '' then
  redis.call('PUBLISH', channel, origin .. ':' .. KEYS[1])
end
return redis.call('XADD', KEYS[3], '*', 'k', key, 'f', tag, 'p', payload)
