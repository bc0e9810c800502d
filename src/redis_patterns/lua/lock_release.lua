-- KEYS[1] lock key {lock:<name>}
-- ARGV[1] owner token
-- returns 1 when the lock was ours and is now deleted, 0 when it is not held by this token
local token = ARGV[1]
if redis.call('GET', KEYS[1]) == token then
  return redis.call('DEL', KEYS[1])
end
return 0
