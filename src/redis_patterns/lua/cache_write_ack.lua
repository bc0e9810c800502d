-- KEYS[1] the write-behind stream
-- KEYS[2] its dead-letter stream
-- ARGV[1] consumer group
-- ARGV[2] error: "" = flushed (acknowledge and delete); else copy each entry to the dead letters
--         with this error, then acknowledge and delete it
-- ARGV[3..] entry ids
-- returns how many entries were acknowledged
local group = ARGV[1]
local err = ARGV[2]
local acked = 0
for i = 3, #ARGV do
  local id = ARGV[i]
  if err ~= '' then
    local found = redis.call('XRANGE', KEYS[1], id, id)
    if found[1] then
      local fields = found[1][2]
      fields[#fields + 1] = 'id'
      fields[#fields + 1] = id
      fields[#fields + 1] = 'error'
      fields[#fields + 1] = err
      redis.call('XADD', KEYS[2], '*', unpack(fields))
    end
  end
  acked = acked + redis.call('XACK', KEYS[1], group, id)
  redis.call('XDEL', KEYS[1], id)
end
return acked
