-- KEYS[1] the recompute lock
-- ARGV[1] token of the loader that took it
-- ARGV[2] backoff (ms): keep the lock this long after a failed load (0 = release now), so a
--         failing store is called at most once per backoff by all processes together
-- returns 1 if the lock was ours, else 0
local token = ARGV[1]
local backoff = tonumber(ARGV[2])
if redis.call('GET', KEYS[1]) ~= token then
  return 0
end
if backoff > 0 then
  redis.call('PEXPIRE', KEYS[1], backoff)
else
  redis.call('DEL', KEYS[1])
end
return 1
