-- KEYS[1] source wallet (a string holding an integer balance; missing counts as 0)
-- KEYS[2] target wallet
-- ARGV[1] amount to move (a positive integer)
-- returns the source's new balance, or nil when the balance is too low (nothing is written)
local amount = tonumber(ARGV[1])
if amount == nil or amount <= 0 or amount % 1 ~= 0 then
  return redis.error_reply('ERR amount must be a positive integer, got ' .. tostring(ARGV[1]))
end
local balance = tonumber(redis.call('GET', KEYS[1]) or '0')
if balance < amount then
  return nil
end
redis.call('INCRBY', KEYS[2], amount)
return redis.call('DECRBY', KEYS[1], amount)
