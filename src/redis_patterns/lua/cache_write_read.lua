-- KEYS[1] the write-behind stream
-- ARGV[1] consumer group
-- ARGV[2] this flusher's consumer name
-- ARGV[3] batch size (max entries)
-- ARGV[4] claim idle (ms): entries pending longer than this (a dead or stuck flusher) are taken over
-- returns {{id, deliveries, {field, value, ...}}, ...}: reclaimed entries first, else new ones
local group = ARGV[1]
local consumer = ARGV[2]
local count = tonumber(ARGV[3])
local idle = tonumber(ARGV[4])

redis.pcall('XGROUP', 'CREATE', KEYS[1], group, '0', 'MKSTREAM')  -- BUSYGROUP when it exists
local list = redis.call('XAUTOCLAIM', KEYS[1], group, consumer, idle, '0-0', 'COUNT', count)[2]
if #list == 0 then
  local reply = redis.call('XREADGROUP', 'GROUP', group, consumer, 'COUNT', count, 'STREAMS', KEYS[1], '>')
  list = reply and reply[1][2] or {}
end
local out = {}
for _, entry in ipairs(list) do
  local id = entry[1]
  if entry[2] then
    local pending = redis.call('XPENDING', KEYS[1], group, id, id, 1)
    local deliveries = pending[1] and pending[1][4] or 1
    out[#out + 1] = {id, deliveries, entry[2]}
  else
    -- Redis 6.2 returns trimmed entries as nil: nothing to flush, acknowledge them.
    redis.call('XACK', KEYS[1], group, id)
  end
end
return out
