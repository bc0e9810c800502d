-- KEYS[1] the new session hash (must not exist yet)
-- KEYS[2] a user's session only: the user's index, session ids scored by absolute expiry (ms)
-- KEYS[2] (anonymous) or KEYS[3] optional: a big create's scratch hash, the fields already in
--         it (HSET in the same MULTI/EXEC block: no value passes through Lua), renamed into KEYS[1]
-- ARGV[1] idle_ms: the idle lifetime
-- ARGV[2] absolute_ms: the absolute lifetime from creation, 0 for none
-- ARGV[3] absolute_at: an absolute expiry (epoch ms) carried over by a rotation, 0 to use ARGV[2]
-- ARGV[4] created_at: a creation time (epoch ms) carried over by a rotation, 0 for now
-- ARGV[5] user id, '' for an anonymous session (then KEYS[2] is absent)
-- ARGV[6] session id (the index member)
-- ARGV[7] the session's own idle lifetime (ms, stored in ':i'), 0 to use ARGV[1]
-- ARGV[8] the session's own deadline (epoch ms, stored in ':d') carried by a rotation, 0 for none
-- ARGV[9] the session's own deadline as ms from now (when ARGV[8] is 0), 0 for none
-- ARGV[10..] field, value pairs: the user fields, already serialized
-- returns nil when KEYS[1] exists (an id collision) or a carried absolute expiry or deadline has
--   passed (the scratch hash deleted); else {now_ms, ttl_ms, absolute_at_ms or -1, index size
--   or -1, deadline_ms or -1}; an error for a scratch hash that is not there
local idle_ms = tonumber(ARGV[1])
local absolute_ms = tonumber(ARGV[2])
local absolute_at = tonumber(ARGV[3])
local created_at = tonumber(ARGV[4])
local user_id = ARGV[5]
local session_id = ARGV[6]
local own_idle = tonumber(ARGV[7])
local deadline = tonumber(ARGV[8])
local deadline_in = tonumber(ARGV[9])
local scratch = KEYS[user_id ~= '' and 3 or 2]

local function refuse()
  if scratch then
    redis.call('DEL', scratch)
  end
  return nil
end

if redis.call('EXISTS', KEYS[1]) == 1 then
  return refuse()
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if created_at == 0 then
  created_at = now
end
if absolute_at == 0 and absolute_ms > 0 then
  absolute_at = now + absolute_ms
end
if deadline == 0 and deadline_in > 0 then
  deadline = now + deadline_in
end
local ttl = idle_ms
if own_idle > 0 then
  ttl = own_idle
end
for _, at in ipairs({absolute_at, deadline}) do
  if at > 0 then
    if at - now <= 0 then
      return refuse()
    end
    ttl = math.min(ttl, at - now)
  end
end

local function fmt(n)
  return string.format('%.0f', n)
end

if scratch then
  -- the fields move without being read; the TTL the block gave the scratch is set anew below.
  -- No scratch hash: the block's HSET failed, and the session is never made without them.
  local moved = redis.pcall('RENAME', scratch, KEYS[1])
  if type(moved) == 'table' and moved.err then
    return redis.error_reply('ERR the scratch hash of a big session create is missing')
  end
end
local meta = {':c', fmt(created_at)}
if absolute_at > 0 then
  table.insert(meta, ':a')
  table.insert(meta, fmt(absolute_at))
end
if user_id ~= '' then
  table.insert(meta, ':u')
  table.insert(meta, user_id)
end
if own_idle > 0 then
  table.insert(meta, ':i')
  table.insert(meta, fmt(own_idle))
end
if deadline > 0 then
  table.insert(meta, ':d')
  table.insert(meta, fmt(deadline))
end
redis.call('HSET', KEYS[1], unpack(meta))
-- unpack has a stack limit, so big sessions are written in chunks
local chunk = {}
for i = 10, #ARGV do
  table.insert(chunk, ARGV[i])
  if #chunk == 1000 then
    redis.call('HSET', KEYS[1], unpack(chunk))
    chunk = {}
  end
end
if #chunk > 0 then
  redis.call('HSET', KEYS[1], unpack(chunk))
end
redis.call('PEXPIRE', KEYS[1], fmt(ttl))

local size = -1
if user_id ~= '' then
  local score = '+inf'
  if absolute_at > 0 then
    score = fmt(absolute_at)
  end
  redis.call('ZADD', KEYS[2], score, session_id)
  -- members past their absolute expiry are certainly dead
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', fmt(now))
  -- the index lives as long as its longest-lived session can, or forever if one may slide forever
  if redis.call('ZCOUNT', KEYS[2], '+inf', '+inf') > 0 then
    redis.call('PERSIST', KEYS[2])
  else
    local last = redis.call('ZRANGE', KEYS[2], -1, -1, 'WITHSCORES')
    redis.call('PEXPIREAT', KEYS[2], last[2])
  end
  size = redis.call('ZCARD', KEYS[2])
end
local absolute_reply = -1
if absolute_at > 0 then
  absolute_reply = fmt(absolute_at)
end
local deadline_reply = -1
if deadline > 0 then
  deadline_reply = fmt(deadline)
end
return {fmt(now), fmt(ttl), absolute_reply, size, deadline_reply}
