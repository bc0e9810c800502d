-- KEYS[1] lock key {lock:<name>}
-- KEYS[2] this server's data epoch {redlock:epoch}: server time (ms) when it was first seen
--         without data; never expires, so it disappears only when the server loses its data
-- ARGV[1] owner token
-- ARGV[2] lock ttl in ms
-- ARGV[3] restart guard in ms: a server whose data is younger than this does not vote
-- returns 1 when granted, 0 when held by someone else, -1 when this server lost its data less
--         than the guard ago (it may have forgotten a lock it granted: the spec's delayed restart)
local token = ARGV[1]
local ttl_ms = ARGV[2]
local guard_ms = tonumber(ARGV[3])
local now = redis.call('TIME')
local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local born = tonumber(redis.call('GET', KEYS[2]) or '')
if born == nil then
  redis.call('SET', KEYS[2], string.format('%.0f', now_ms))
  return -1
end
if now_ms - born < guard_ms then
  return -1
end
if redis.call('SET', KEYS[1], token, 'NX', 'PX', ttl_ms) then
  return 1
end
return 0
