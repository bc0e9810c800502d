-- KEYS[1] the current session hash
-- KEYS[2] the new session hash (same hash tag)
-- KEYS[3] optional: the index of the session's user (present iff ARGV[1] is not '')
-- ARGV[1] the user id the caller believes owns the session, '' for none
-- ARGV[2] current session id, ARGV[3] new session id (index members)
-- ARGV[4] idle_ms: the store's idle lifetime granted to the new id (a rotation counts as
--         activity), unless the session has its own in field ':i'
-- returns nil when the session does not exist (or its absolute lifetime or own deadline is
--   over); {-1, user id} when its user is not ARGV[1] (nothing changed); {-2} when the new id
--   exists (collision); else moves fields, expiries and index entry to the new id, deletes the
--   old one and returns {now_ms, ttl_ms}
local expected_user = ARGV[1]
local old_id = ARGV[2]
local new_id = ARGV[3]
local idle_ms = tonumber(ARGV[4])
-- The metadata only: the fields move with the RENAME, never through Lua (a big session's
-- would cost about 1.5 ms per MB to copy in and out).
local meta = redis.call('HMGET', KEYS[1], ':c', ':u', ':i', ':a', ':d')
if not meta[1] then
  return nil -- no ':c': not a session (session_write)
end
local user_id = meta[2] or ''
if user_id ~= expected_user then
  return {-1, user_id}
end
if redis.call('EXISTS', KEYS[2]) == 1 then
  return {-2}
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(meta[3]) or idle_ms
local absolute_at = meta[4]
for i = 4, 5 do
  if meta[i] then
    local left = tonumber(meta[i]) - now
    if left <= 0 then
      redis.call('DEL', KEYS[1])
      if user_id ~= '' then
        redis.call('ZREM', KEYS[3], old_id)
      end
      return nil
    end
    ttl = math.min(ttl, left)
  end
end
-- RENAME keeps every field in one step; the old id is gone the moment this script ends
redis.call('RENAME', KEYS[1], KEYS[2])
redis.call('PEXPIRE', KEYS[2], string.format('%.0f', ttl))
if user_id ~= '' then
  local score = '+inf'
  if absolute_at then
    score = absolute_at
  end
  -- add before removing: removing a lone member first would delete the index, and the ZADD
  -- would then recreate it without a TTL. The new id keeps the old one's score, so the index's
  -- expiry (session_create: the latest score) still covers every member.
  local lost = redis.call('EXISTS', KEYS[3]) == 0
  redis.call('ZADD', KEYS[3], score, new_id)
  redis.call('ZREM', KEYS[3], old_id)
  if lost and absolute_at then  -- the index was deleted under us: never leave it immortal
    redis.call('PEXPIREAT', KEYS[3], absolute_at)
  end
end
return {string.format('%.0f', now), string.format('%.0f', ttl)}
