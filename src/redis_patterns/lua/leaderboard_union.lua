-- KEYS[1] the combined board: a cached snapshot of the sum of the period boards
-- KEYS[2..n] the period boards to add up (missing ones count as empty)
-- ARGV[1] how long the snapshot is kept, in ms
-- ARGV[2] "1" to rebuild the snapshot even if it is still cached
-- returns the number of members in the snapshot
local keep_ms = ARGV[1]
local rebuild = ARGV[2] == '1'
if not rebuild and redis.call('EXISTS', KEYS[1]) == 1 then
  return redis.call('ZCARD', KEYS[1])
end
local sources = {}
for i = 2, #KEYS do
  sources[#sources + 1] = KEYS[i]
end
local count = redis.call('ZUNIONSTORE', KEYS[1], #sources, unpack(sources))
if count > 0 then
  redis.call('PEXPIRE', KEYS[1], keep_ms)
end
return count
