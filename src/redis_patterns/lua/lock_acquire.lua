-- KEYS[1] lock key {lock:<name>} (holds the owner token while held)
-- KEYS[2] fence counter {lock:<name>}:fence
-- ARGV[1] owner token (random, unique per acquisition)
-- ARGV[2] lock ttl in ms
-- ARGV[3] fence retention in ms: how long a fence counter lives after its first acquisition
-- returns the fence (>= 1) when acquired; when held by someone else, -1 - their remaining ms
--   (so <= 0: -1 - PTTL, 0 for a key without expiry)
--
-- One acquisition is SET NX PX and INCR. A counter that does not exist yet (first use, expired
-- after its retention, or lost in a restart/failover) starts from the server's clock in
-- microseconds, so fences still increase across counters as long as the clock did not step
-- back and a name was acquired less than once per microsecond on average while its previous
-- counter lived (a server runs far fewer scripts than that).
if not redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return -1 - redis.call('PTTL', KEYS[1])
end
local fence = redis.call('INCR', KEYS[2])
if fence == 1 then
  local now = redis.call('TIME')
  fence = now[1] * 1000000 + now[2]
  redis.call('SET', KEYS[2], fence, 'PX', ARGV[3])
end
return fence
