-- KEYS[1] the namespace generation (absent = "0")
-- KEYS[2i], KEYS[2i+1] the i-th entry and its recompute lock (all in one slot on a cluster)
-- ARGV[1] lock ttl (ms): how long a tombstone keeps a running loader from storing
-- ARGV[2] invalidation channel ("" = no near caches to tell)
-- ARGV[3] origin: the writer's id, published as "<origin>:<key>"
-- returns how many live entries (fresh, of the current generation) were deleted
local lock_ttl = tonumber(ARGV[1])
local channel = ARGV[2]
local origin = ARGV[3]

local generation = redis.call('GET', KEYS[1]) or '0'
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local live = 0
local n = (#KEYS - 1) / 2
for i = 1, n do
  local key, lock = KEYS[2 * i], KEYS[2 * i + 1]
  local entry = redis.call('GET', key)
  if entry then
    local soft, written = string.match(entry, '^rp2:[^:]*:=?(%d+):%d+:(%d+):')
    if written == generation and (soft == '0' or tonumber(soft) > now) then
      live = live + 1
    end
    redis.call('DEL', key)
  end
  if redis.call('EXISTS', lock) == 1 then
    redis.call('SET', lock, '!', 'PX', lock_ttl)
  end
  if channel ~= '' then
    redis.call('PUBLISH', channel, origin .. ':' .. key)
  end
end
return live
