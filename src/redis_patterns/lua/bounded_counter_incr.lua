-- KEYS[1] the counter (a string holding an integer; missing counts as 0)
-- ARGV[1] limit: the value the counter must never exceed
-- ARGV[2] amount to add (> 0)
-- returns the new value, or nil when adding amount would exceed limit (nothing is written)
local limit = tonumber(ARGV[1])
local amount = tonumber(ARGV[2])
local current = redis.call('GET', KEYS[1])
local value = 0
if current then
  value = tonumber(current)
  if value == nil then
    return redis.error_reply('ERR counter ' .. KEYS[1] .. ' does not hold an integer')
  end
end
if value + amount > limit then
  return nil
end
return redis.call('INCRBY', KEYS[1], amount)
