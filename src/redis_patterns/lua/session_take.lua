-- KEYS[1] the session hash
-- KEYS[2] optional: the index of the session's user (present iff ARGV[1] is not '')
-- ARGV[1] the user id the caller believes owns the session, '' for none
-- ARGV[2] session id (the index member)
-- ARGV[3] '1' = return the session's fields (a rotation moves them), '0' = only delete it
-- returns nil when the session does not exist; {-1, user id} when its user is not ARGV[1]
--   (nothing changed: the caller sends again with that user's index); else deletes the
--   session (and its index entry) and returns {now_ms, ttl_ms it had left, {field, value, ...}}
--   (no fields with ARGV[3] '0': a destroy's values never pass through Lua, issue 16)
local expected_user = ARGV[1]
local session_id = ARGV[2]
local meta = redis.call('HMGET', KEYS[1], ':c', ':u')
if not meta[1] then
  -- no session, or no ':c': what a big write left of one that had ended (session_write)
  redis.call('DEL', KEYS[1])
  return nil
end
local user_id = meta[2] or ''
if user_id ~= expected_user then
  return {-1, user_id}
end
local fields = {}
if ARGV[3] == '1' then
  fields = redis.call('HGETALL', KEYS[1])
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = redis.call('PTTL', KEYS[1])
redis.call('DEL', KEYS[1])
if user_id ~= '' then
  redis.call('ZREM', KEYS[2], session_id)
end
return {string.format('%.0f', now), ttl, fields}
