-- KEYS[1] the board (a sorted set, highest score ranks first)
-- ARGV[1] member at the centre
-- ARGV[2] radius: how many entries to show on each side (clipped at the board's edges)
-- ARGV[3] competition: "1" to also count members strictly above the first entry's score
-- returns nil when the member is absent, else
--   {0-based position of the first entry, members above its score (or -1), member, score, ...}
local member = ARGV[1]
local radius = tonumber(ARGV[2])
local competition = ARGV[3] == '1'
local position = redis.call('ZREVRANK', KEYS[1], member)
if not position then
  return nil
end
local start = position - radius
if start < 0 then
  start = 0
end
local entries = redis.call('ZREVRANGE', KEYS[1], start, position + radius, 'WITHSCORES')
local higher = -1
if competition then
  higher = redis.call('ZCOUNT', KEYS[1], '(' .. entries[2], '+inf')
end
local reply = {start, higher}
for i = 1, #entries do
  reply[#reply + 1] = entries[i]
end
return reply
