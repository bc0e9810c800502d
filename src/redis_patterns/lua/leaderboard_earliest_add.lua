-- KEYS[1] the board (a sorted set of encoded scores: score * 2^31 + (2^31 - 1 - sequence))
-- KEYS[2] the board's achievement counter (a string holding an integer)
-- ARGV[1] condition: "" (always), "GT" (only higher) or "LT" (only lower)
-- ARGV[2], ARGV[3], ... member, score pairs (scores are integers within +-(2^21 - 1))
-- returns how many members were added or changed
-- A score is stamped with the board's next sequence number when it changes, so among equal
-- scores the one reached first encodes higher and ranks first. Re-adding an unchanged score
-- keeps its original stamp.
local condition = ARGV[1]
local SPAN = 2147483648 -- 2^31 sequence numbers per score
local changed = 0
for i = 2, #ARGV, 2 do
  local member = ARGV[i]
  local score = tonumber(ARGV[i + 1])
  local current = redis.call('ZSCORE', KEYS[1], member)
  local write = true
  if current then
    local old = math.floor(tonumber(current) / SPAN)
    if old == score or (condition == 'GT' and score < old) or (condition == 'LT' and score > old) then
      write = false
    end
  end
  if write then
    local sequence = redis.call('INCR', KEYS[2])
    if sequence >= SPAN then
      return redis.error_reply('ERR leaderboard ' .. KEYS[1] .. ' has used all 2^31 sequence numbers')
    end
    -- '%.0f': an integer below 2^53 printed exactly (no 14-digit rounding on any server)
    redis.call('ZADD', KEYS[1], string.format('%.0f', score * SPAN + (SPAN - 1 - sequence)), member)
    changed = changed + 1
  end
end
return changed
