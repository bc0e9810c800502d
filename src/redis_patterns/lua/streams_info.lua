-- KEYS[1] the stream, {stream:<name>}
-- KEYS[2] the dead-letter stream, {stream:<name>}:dead
-- ARGV[1] group
-- returns {length, dead_length, group_exists (0/1), pending, lag (-1 when the server cannot tell),
--          last_delivered_id, oldest_pending_id ('' when none), now_ms (server TIME),
--          {name, pending, idle_ms, name, pending, idle_ms, ...}}
local group = ARGV[1]
local time = redis.call('TIME')
local now_ms = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local dead_length = redis.call('XLEN', KEYS[2])
if redis.call('EXISTS', KEYS[1]) == 0 then
  return {0, dead_length, 0, 0, 0, '', '', now_ms, {}}
end
local length = redis.call('XLEN', KEYS[1])
local found = nil
for _, g in ipairs(redis.call('XINFO', 'GROUPS', KEYS[1])) do
  local fields = {}
  for k = 1, #g, 2 do fields[g[k]] = g[k + 1] end
  if fields['name'] == group then found = fields end
end
if not found then
  return {length, dead_length, 0, 0, length, '', '', now_ms, {}}
end
local lag = -1
if found['lag'] then lag = tonumber(found['lag']) end
local oldest = ''
local first = redis.call('XPENDING', KEYS[1], group, '-', '+', 1)[1]
if first then oldest = first[1] end
local consumers = {}
for _, c in ipairs(redis.call('XINFO', 'CONSUMERS', KEYS[1], group)) do
  local fields = {}
  for k = 1, #c, 2 do fields[c[k]] = c[k + 1] end
  table.insert(consumers, fields['name'])
  table.insert(consumers, fields['pending'])
  table.insert(consumers, fields['idle'])
end
return {length, dead_length, 1, tonumber(found['pending']), lag, found['last-delivered-id'],
        oldest, now_ms, consumers}
