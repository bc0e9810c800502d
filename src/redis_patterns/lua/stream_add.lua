-- KEYS[1] the stream, {stream:<name>}
-- ARGV[1] group: created at id 0 (XGROUP CREATE ... MKSTREAM) when the stream does not exist yet,
--         so the group sees the very first entry
-- ARGV[2] max_len: approximate trimming (MAXLEN ~ max_len); 0 means no trimming
-- ARGV[3..] field, value, field, value, ... (at least one pair)
-- returns the new entry's id
local group = ARGV[1]
local max_len = tonumber(ARGV[2])
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
for i = 3, #ARGV do
  table.insert(command, ARGV[i])
end
return redis.call(unpack(command))
