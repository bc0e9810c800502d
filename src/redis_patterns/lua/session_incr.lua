-- KEYS[1] the session hash
-- ARGV[1] field (a user field holding a JSON integer, or missing: counts as 0)
-- ARGV[2] amount to add (an integer, may be negative)
-- returns nil when the session does not exist (nothing is written), else {new value}
local field = ARGV[1]
local amount = ARGV[2]
if redis.call('HEXISTS', KEYS[1], ':c') == 0 then  -- no ':c': not a session (session_write)
  return nil
end
return {redis.call('HINCRBY', KEYS[1], field, amount)}
