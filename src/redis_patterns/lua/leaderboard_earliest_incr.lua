-- KEYS[1] the board (a sorted set of encoded scores: score * 2^31 + (2^31 - 1 - sequence))
-- KEYS[2] the board's achievement counter (a string holding an integer)
-- ARGV[1] member
-- ARGV[2] amount to add (an integer; the result must stay within +-(2^21 - 1))
-- returns the member's new score; the new score is stamped with the next sequence number
local member = ARGV[1]
local amount = tonumber(ARGV[2])
local SPAN = 2147483648
local LIMIT = 2097151 -- 2^21 - 1: score * 2^31 stays an exact double (< 2^53)
local current = redis.call('ZSCORE', KEYS[1], member)
local score = 0
if current then
  score = math.floor(tonumber(current) / SPAN)
end
if current and amount == 0 then
  return score
end
score = score + amount
if score > LIMIT or score < -LIMIT then
  return redis.error_reply('ERR score ' .. score .. ' is beyond +-(2^21 - 1), the limit of ties="earliest"')
end
local sequence = redis.call('INCR', KEYS[2])
if sequence >= SPAN then
  return redis.error_reply('ERR leaderboard ' .. KEYS[1] .. ' has used all 2^31 sequence numbers')
end
-- '%.0f': an integer below 2^53 printed exactly (no 14-digit rounding on any server)
redis.call('ZADD', KEYS[1], string.format('%.0f', score * SPAN + (SPAN - 1 - sequence)), member)
return score
