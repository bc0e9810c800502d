-- KEYS[1] the data hash {fenced:<name>}
-- KEYS[2] the highest fence accepted so far {fenced:<name>}:fence
-- ARGV[1] the writer's fence (integer < 2^53)
-- ARGV[2] field
-- ARGV[3] value
-- returns {1, fence} when written; {0, highest} when refused because fence < highest
local fence = tonumber(ARGV[1])
local field = ARGV[2]
local value = ARGV[3]
local highest = tonumber(redis.call('GET', KEYS[2]) or '-1')
if fence < highest then
  return {0, highest}
end
redis.call('SET', KEYS[2], ARGV[1])
redis.call('HSET', KEYS[1], field, value)
return {1, fence}
