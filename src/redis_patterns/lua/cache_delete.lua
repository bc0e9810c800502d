-- KEYS[1] the entry
-- KEYS[2] the recompute lock
-- KEYS[3] the namespace generation (absent = "0")
-- ARGV[1] lock ttl (ms): how long the tombstone keeps a running loader from storing
-- ARGV[2] invalidation channel ("" = no near caches to tell)
-- ARGV[3] origin: the writer's id, published as "<origin>:<key>" so it can skip its own message
-- returns 1 if a live entry (fresh, of the current generation) was deleted, else 0
local lock_ttl = tonumber(ARGV[1])
local channel = ARGV[2]
local origin = ARGV[3]

local live = 0
-- The header only (it fits in 128 bytes): a big value stays out of Lua.
local head = redis.call('GETRANGE', KEYS[1], 0, 127)
local soft, written = string.match(head, '^rp2:[^:]*:=?(%d+):%d+:(%d+):')
if written == (redis.call('GET', KEYS[3]) or '0') then
  if soft == '0' then
    live = 1
  else
    local time = redis.call('TIME')
    local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
    if tonumber(soft) > now then
      live = 1
    end
  end
end
redis.call('DEL', KEYS[1])
if redis.call('EXISTS', KEYS[2]) == 1 then
  -- A loader is running: it read before this delete, so it must not store what it read.
  redis.call('SET', KEYS[2], '!', 'PX', lock_ttl)
end
if channel ~= '' then
  redis.call('PUBLISH', channel, origin .. ':' .. KEYS[1])
end
return live
