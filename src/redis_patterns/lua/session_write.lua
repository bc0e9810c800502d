-- KEYS[1] the session hash
-- ARGV[1] n: how many field/value pairs follow
-- ARGV[2..2n+1] field, value pairs to set (user fields, already serialized)
-- ARGV[2n+2..] fields to delete
-- returns 1 when the session exists and the changes were applied, 0 when it does not (nothing
--   is written: a write never resurrects an expired or destroyed session)
local n = tonumber(ARGV[1])
if redis.call('EXISTS', KEYS[1]) == 0 then
  return 0
end
local chunk = {}
for i = 2, 2 * n + 1 do
  table.insert(chunk, ARGV[i])
  if #chunk == 1000 then
    redis.call('HSET', KEYS[1], unpack(chunk))
    chunk = {}
  end
end
if #chunk > 0 then
  redis.call('HSET', KEYS[1], unpack(chunk))
end
chunk = {}
for i = 2 * n + 2, #ARGV do
  table.insert(chunk, ARGV[i])
  if #chunk == 1000 then
    redis.call('HDEL', KEYS[1], unpack(chunk))
    chunk = {}
  end
end
if #chunk > 0 then
  redis.call('HDEL', KEYS[1], unpack(chunk))
end
return 1
