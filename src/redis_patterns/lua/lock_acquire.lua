-- KEYS[1] lock key {lock:<name>} (holds the owner token while held)
-- KEYS[2] fence counter {lock:<name>}:fence
-- ARGV[1] owner token (random, unique per acquisition)
-- ARGV[2] lock ttl in ms
-- ARGV[3] fence retention in ms: how long the counter outlives the last acquisition
-- returns {1, fence} when acquired; {0, pttl} when held by someone else (their remaining ms)
--
-- The fence is max(previous + 1, server time in microseconds): strictly increasing while the
-- counter exists, and still increasing after it expired (or was lost in a restart/failover)
-- as long as the server clock did not step back by more than the retention.
local token = ARGV[1]
local ttl_ms = ARGV[2]
local retention_ms = ARGV[3]
if not redis.call('SET', KEYS[1], token, 'NX', 'PX', ttl_ms) then
  return {0, redis.call('PTTL', KEYS[1])}
end
local now = redis.call('TIME')
local now_us = tonumber(now[1]) * 1000000 + tonumber(now[2])
local previous = tonumber(redis.call('GET', KEYS[2]) or '0') or 0
local fence = math.max(previous + 1, now_us)
redis.call('SET', KEYS[2], string.format('%.0f', fence), 'PX', retention_ms)
return {1, fence}
