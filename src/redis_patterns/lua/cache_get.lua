-- KEYS[1] the entry: "rp2:<format>:<soft expiry, server ms; 0 none; =<ms>: equal to the hard
--         expiry, so present means fresh>:<loader ms>:<generation>:<payload>", PX = hard expiry
-- KEYS[2] the recompute lock (a loader's token, or "!" = a tombstone left by set/delete)
-- KEYS[3] the namespace generation (absent = "0"; `clear` increments it): an entry of another
--         generation is gone (deleted here, so its memory is reclaimed at once)
-- ARGV[1] mode: 0 read only, 1 "lock" (take the lock on a miss or a stale entry),
--         2 "xfetch" (as 1, and also take it early with probability per Vattani et al.),
--         3 no stampede protection (on a miss record the token, excluding nobody, so a later
--         set or delete can still tell this loader that its result is outdated),
--         4 probe (as 0, but the entry itself is not returned: has_key)
-- ARGV[2] token of this caller (to store in the lock if taken)
-- ARGV[3] lock ttl (ms)
-- ARGV[4] beta (xfetch; > 0)
-- ARGV[5] r: uniform random number in (0, 1] drawn by the client
-- returns {status, entry or false, took_lock (0/1), ms until soft expiry (-1: none), generation}
--   status 0 miss, 1 fresh hit, 2 stale (past soft expiry, before hard), 3 fresh but refresh early,
--   -1 malformed entry (treated as a miss)
local mode = tonumber(ARGV[1])
local token = ARGV[2]
local lock_ttl = tonumber(ARGV[3])
local beta = tonumber(ARGV[4])
local r = tonumber(ARGV[5])

local function take()
  if mode == 0 or mode == 4 then
    return 0
  end
  if mode == 3 then
    redis.call('SET', KEYS[2], token, 'PX', lock_ttl)
    return 1
  end
  local holder = redis.call('GET', KEYS[2])
  if holder and holder ~= '!' then
    return 0
  end
  redis.call('SET', KEYS[2], token, 'PX', lock_ttl)
  return 1
end

local generation = redis.call('GET', KEYS[3]) or '0'
local entry = redis.call('GET', KEYS[1])
if not entry then
  return {0, false, take(), 0, generation}
end
local soft, delta, written = string.match(entry, '^rp2:[^:]*:=?(%d+):(%d+):(%d+):')
if not soft then
  return {-1, false, take(), 0, generation}
end
if written ~= generation then
  redis.call('DEL', KEYS[1])
  return {0, false, take(), 0, generation}
end
local returned = entry
if mode == 4 then
  returned = false
end
if soft == '0' then
  return {1, returned, 0, -1, generation}
end
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local left = tonumber(soft) - now
if left <= 0 then
  if mode == 0 or mode == 4 then
    return {0, false, 0, 0, generation}
  end
  return {2, entry, take(), 0, generation}
end
if mode == 2 and tonumber(delta) * beta * -math.log(r) >= left then
  if take() == 1 then
    return {3, entry, 1, left, generation}
  end
end
return {1, returned, 0, left, generation}
