-- KEYS[1] the stream, {stream:<name>}
-- KEYS[2] (optional) the idempotency key {stream:<name>}:dedupe:<key>: holds the id of the
--         entry already added under that key
-- ARGV[1] group: created at id 0 (XGROUP CREATE ... MKSTREAM) when the stream does not exist yet,
--         so the group sees the very first entry
-- ARGV[2] max_len: approximate trimming (MAXLEN ~ max_len); 0 means no trimming
-- ARGV[3] dedupe_ttl_ms: how long an idempotency key is remembered (ignored without KEYS[2])
-- ARGV[4..] field, value, field, value, ... (at least one pair)
-- returns {id, added}: the new entry's id and 1, or the id added earlier under KEYS[2] and 0
local group = ARGV[1]
local max_len = tonumber(ARGV[2])
local dedupe_ttl = ARGV[3]
if KEYS[2] then
  local earlier = redis.call('GET', KEYS[2])
  if earlier then
    return {earlier, 0}
  end
end
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('XGROUP', 'CREATE', KEYS[1], group, '0', 'MKSTREAM')
end
local command = {'XADD', KEYS[1]}
if max_len > 0 then
  table.insert(command, 'MAXLEN')
  table.insert(command, '~')
  table.insert(command, max_len)
end
table.insert(command, '*')
for i = 4, #ARGV do
  table.insert(command, ARGV[i])
end
local id = redis.call(unpack(command))
if KEYS[2] then
  redis.call('SET', KEYS[2], id, 'PX', dedupe_ttl)
end
return {id, 1}
