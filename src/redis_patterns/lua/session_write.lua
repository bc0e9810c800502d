-- KEYS[1] the session hash
-- ARGV[1] n: how many field/value pairs follow ARGV[4]; -1: the commit of a big write's block
--         (its fields were set by HSET, deleted by HDEL), ARGV[5] then the TTL the block's
--         PEXPIRE NX gave a key that had none, and no fields follow
-- ARGV[2] the session's own idle lifetime: -1 leaves it, 0 removes it (back to ARGV[4]),
--         > 0 sets it (ms, field ':i')
-- ARGV[3] the session's own deadline: -1 leaves it, 0 removes it, > 0 sets it to that many ms
--         from now (field ':d', epoch ms)
-- ARGV[4] idle_ms: the store's idle lifetime (used when the expiry changes)
-- ARGV[5..2n+4] field, value pairs to set (user fields, already serialized)
-- ARGV[2n+5..] fields to delete
-- returns 1 when the session exists and the changes were applied, 0 when it does not (nothing
--   is written: a write never resurrects an expired or destroyed session). Field writes leave
--   the TTL alone; an expiry change sets it again from now, as a read does. A key of another
--   type: the server's WRONGTYPE error, the key left as it was (see the commit below).
--
-- A session is a hash holding ':c' (every create writes it, no user field is named so). A key
-- without it is not one: what a big write's block (HSET, HDEL, PEXPIRE NX, then this with n = -1
-- as its commit, see SessionCore.write) put into a session that had ended, or left behind when
-- this did not run in it (NOSCRIPT). It is deleted and 0 returned, here and nowhere else.
local n = tonumber(ARGV[1])
local own_idle = tonumber(ARGV[2])
local deadline_in = tonumber(ARGV[3])
local idle_ms = tonumber(ARGV[4])
local first_doomed = 2 * n + 5
local leftover = nil
if n < 0 then
  n, first_doomed, leftover = 0, #ARGV + 1, tonumber(ARGV[5])
end
local exists = redis.pcall('HEXISTS', KEYS[1], ':c')
if type(exists) == 'table' then
  -- WRONGTYPE: another program's key. The block's HSET failed on it, its PEXPIRE NX did not:
  -- a key that had no TTL was given the leftover one, in this EXEC, with nothing run since
  -- (its PTTL is that to the ms); take it back rather than let the key vanish 10 s later.
  -- (One whose own TTL is within 5 ms of the leftover's at this very moment would lose it.)
  if leftover then
    local pttl = redis.call('PTTL', KEYS[1])
    if pttl <= leftover and pttl > leftover - 5 then
      redis.call('PERSIST', KEYS[1])
    end
  end
  return exists
end
if exists == 0 then
  redis.call('DEL', KEYS[1])
  return 0
end
local chunk = {}
for i = 5, 2 * n + 4 do
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
for i = first_doomed, #ARGV do
  table.insert(chunk, ARGV[i])
  if #chunk == 1000 then
    redis.call('HDEL', KEYS[1], unpack(chunk))
    chunk = {}
  end
end
if #chunk > 0 then
  redis.call('HDEL', KEYS[1], unpack(chunk))
end
-- A live session without a TTL (PERSISTed, or restored without one) got the block's leftover
-- TTL from its PEXPIRE NX, a moment ago in the same EXEC: it gets its own lifetime again, as
-- a read would give it. (One whose own TTL happens to be within a second of the leftover's
-- is given its lifetime again too: a read would slide it the same way.)
local untimed = false
if leftover then
  local pttl = redis.call('PTTL', KEYS[1])
  untimed = pttl <= leftover and pttl > leftover - 1000
end
if own_idle < 0 and deadline_in < 0 and not untimed then
  return 1
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if own_idle == 0 then
  redis.call('HDEL', KEYS[1], ':i')
elseif own_idle > 0 then
  redis.call('HSET', KEYS[1], ':i', ARGV[2])
end
if deadline_in == 0 then
  redis.call('HDEL', KEYS[1], ':d')
elseif deadline_in > 0 then
  redis.call('HSET', KEYS[1], ':d', string.format('%.0f', now + deadline_in))
end
local meta = redis.call('HMGET', KEYS[1], ':i', ':a', ':d')
local ttl = tonumber(meta[1]) or idle_ms
for i = 2, 3 do
  if meta[i] then
    ttl = math.min(ttl, tonumber(meta[i]) - now)
  end
end
if ttl <= 0 then
  -- the absolute expiry is this very ms: the session ends, as a read would find
  redis.call('DEL', KEYS[1])
else
  redis.call('PEXPIRE', KEYS[1], string.format('%.0f', ttl))
end
return 1
