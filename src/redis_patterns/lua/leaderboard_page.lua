-- KEYS[1] the board (a sorted set, highest score ranks first)
-- ARGV[1] start: 0-based position of the first entry
-- ARGV[2] stop: 0-based position of the last entry (inclusive)
-- ARGV[3] competition: "1" to also count members strictly above the first entry's score
-- returns {total members, members above the first entry's score (or -1), member, score, ...}
local start = tonumber(ARGV[1])
local stop = tonumber(ARGV[2])
local competition = ARGV[3] == '1'
local total = redis.call('ZCARD', KEYS[1])
local entries = redis.call('ZREVRANGE', KEYS[1], start, stop, 'WITHSCORES')
local higher = -1
if competition and #entries > 0 then
  higher = redis.call('ZCOUNT', KEYS[1], '(' .. entries[2], '+inf')
end
local reply = {total, higher}
for i = 1, #entries do
  reply[#reply + 1] = entries[i]
end
return reply
