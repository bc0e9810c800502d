-- KEYS[1] the stream, {stream:<name>}
-- ARGV[1] group
-- ARGV[2] min_idle_ms: only consumers idle at least this long are considered
-- ARGV[3] (optional) limit: delete at most this many consumers in this call; 0 or absent: no limit
-- returns the names of the consumers deleted: only those holding no pending entry, checked in
-- this same script (XGROUP DELCONSUMER drops a consumer's pending entries: they would be lost)
local group = ARGV[1]
local min_idle = tonumber(ARGV[2])
local limit = tonumber(ARGV[3] or '0')
if redis.call('EXISTS', KEYS[1]) == 0 then
  return {}
end
local deleted = {}
for _, c in ipairs(redis.call('XINFO', 'CONSUMERS', KEYS[1], group)) do
  if limit > 0 and #deleted >= limit then
    break
  end
  local fields = {}
  for k = 1, #c, 2 do fields[c[k]] = c[k + 1] end
  if tonumber(fields['pending']) == 0 and tonumber(fields['idle']) >= min_idle then
    redis.call('XGROUP', 'DELCONSUMER', KEYS[1], group, fields['name'])
    table.insert(deleted, fields['name'])
  end
end
return deleted
