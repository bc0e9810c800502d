-- KEYS[1] lock key {lock:<name>}
-- ARGV[1] owner token
-- ARGV[2] new remaining time in ms
-- returns 1 when extended, 0 when the lock is not held by this token (nothing is created)
local token = ARGV[1]
local ttl_ms = ARGV[2]
if redis.call('GET', KEYS[1]) == token then
  redis.call('PEXPIRE', KEYS[1], ttl_ms)
  return 1
end
return 0
