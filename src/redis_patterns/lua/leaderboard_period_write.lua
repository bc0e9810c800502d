-- KEYS[1] the period's board (a sorted set that expires on its own)
-- ARGV[1] expire at: unix time in ms after which the period's board may go (its retention end)
-- ARGV[2] operation: "add" or "incr"
-- ARGV[3] member
-- ARGV[4] score (add) or amount (incr)
-- ARGV[5] condition for add: "" (always), "GT" (only higher) or "LT" (only lower)
-- returns add: 1 when the board changed, else 0; incr: the new score;
--         {server time in ms} (an array) when the retention already ended: nothing was written
local expire_at = ARGV[1]
local operation = ARGV[2]
local member = ARGV[3]
local value = ARGV[4]
local condition = ARGV[5]
-- Judged by the server's clock, before any write: PEXPIREAT in the past would delete the board
-- (and the write with it) while the caller is told it succeeded.
local now = redis.call('TIME')
local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
if now_ms >= tonumber(expire_at) then
  return {now_ms}
end
local reply
if operation == 'incr' then
  reply = redis.call('ZINCRBY', KEYS[1], value, member)
elseif condition == '' then
  reply = redis.call('ZADD', KEYS[1], 'CH', value, member)
else
  reply = redis.call('ZADD', KEYS[1], condition, 'CH', value, member)
end
-- Set on every write, so the key and its expiry are never apart (no EXPIRE-less board).
redis.call('PEXPIREAT', KEYS[1], expire_at)
return reply
