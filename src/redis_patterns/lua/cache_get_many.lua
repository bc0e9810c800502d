-- KEYS[1] the namespace generation (absent = "0")
-- KEYS[2i], KEYS[2i+1] the i-th entry and its recompute lock (all in one slot on a cluster)
-- ARGV[1] mode: 0 read only, 1 "lock", 2 "xfetch", 3 no stampede protection (see cache_get)
-- ARGV[2] token of this caller (stored in each lock it takes)
-- ARGV[3] lock ttl (ms)
-- ARGV[4] beta (xfetch; > 0)
-- ARGV[4+i] r for the i-th key: uniform random number in (0, 1] drawn by the client
-- returns {generation, then per key: status, entry or false, took_lock, ms until soft expiry}
--   with the statuses of cache_get; an entry of another generation is deleted and is a miss
local mode = tonumber(ARGV[1])
local token = ARGV[2]
local lock_ttl = tonumber(ARGV[3])
local beta = tonumber(ARGV[4])

local function take(lock)
  if mode == 0 then
    return 0
  end
  if mode == 3 then
    redis.call('SET', lock, token, 'PX', lock_ttl)
    return 1
  end
  local holder = redis.call('GET', lock)
  if holder and holder ~= '!' then
    return 0
  end
  redis.call('SET', lock, token, 'PX', lock_ttl)
  return 1
end

local generation = redis.call('GET', KEYS[1]) or '0'
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local out = {generation}
local n = (#KEYS - 1) / 2
for i = 1, n do
  local key, lock = KEYS[2 * i], KEYS[2 * i + 1]
  local status, returned, took, left = 0, false, 0, 0
  local entry = redis.call('GET', key)
  if not entry then
    took = take(lock)
  else
    local soft, delta, written = string.match(entry, '^rp2:[^:]*:=?(%d+):(%d+):(%d+):')
    if not soft then
      status, took = -1, take(lock)
    elseif written ~= generation then
      redis.call('DEL', key)
      took = take(lock)
    elseif soft == '0' then
      status, returned, left = 1, entry, -1
    else
      left = tonumber(soft) - now
      if left <= 0 then
        left = 0
        if mode ~= 0 then
          status, returned, took = 2, entry, take(lock)
        end
      elseif mode == 2 and tonumber(delta) * beta * -math.log(tonumber(ARGV[4 + i])) >= left
        and take(lock) == 1 then
        status, returned, took = 3, entry, 1
      else
        status, returned = 1, entry
      end
    end
  end
  out[#out + 1] = status
  out[#out + 1] = returned
  out[#out + 1] = took
  out[#out + 1] = left
end
return out
