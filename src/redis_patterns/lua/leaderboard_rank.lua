-- KEYS[1] the board (a sorted set, highest score ranks first)
-- ARGV[1] member
-- returns the member's competition rank (1 + members with a strictly higher score), or nil
local member = ARGV[1]
local score = redis.call('ZSCORE', KEYS[1], member)
if not score then
  return nil
end
-- The score stays the string Redis gave us (no Lua number round trip, which would round it).
return redis.call('ZCOUNT', KEYS[1], '(' .. score, '+inf') + 1
