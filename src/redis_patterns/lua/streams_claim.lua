-- KEYS[1] the stream, {stream:<name>}
-- KEYS[2] the dead-letter stream, {stream:<name>}:dead
-- KEYS[3] the last-error hash, {stream:<name>}:errors (entry id -> error of its last failure)
-- ARGV[1] group
-- ARGV[2] consumer that takes the entries over
-- ARGV[3] min_idle_ms: only entries idle at least this long are claimed (their owner is presumed dead)
-- ARGV[4] cursor: where the previous XAUTOCLAIM scan stopped ('0-0' to start over)
-- ARGV[5] count: the most entries to claim
-- ARGV[6] max_deliveries: a claimed entry delivered more times than this is dead-lettered instead
-- returns {next_cursor, claimed, deleted, dead}:
--   claimed: {{id, deliveries, {field, value, ...}}, ...} handed to this consumer
--   deleted: ids that were pending but no longer exist in the stream (trimmed or XDEL'd):
--            acknowledged here, so they can never clog the pending list
--   dead: ids moved to the dead-letter stream (and acknowledged) by this call
if redis.replicate_commands then pcall(redis.replicate_commands) end
local group = ARGV[1]
local consumer = ARGV[2]
local min_idle = ARGV[3]
local cursor = ARGV[4]
local count = ARGV[5]
local max_deliveries = tonumber(ARGV[6])

local function dead_letter(id, deliveries, fields, err)
  local command = {'XADD', KEYS[2], '*', 'id', id, 'group', group, 'consumer', consumer,
                   'deliveries', deliveries, 'error', err}
  for i = 1, #fields, 2 do
    table.insert(command, 'data.' .. fields[i])
    table.insert(command, fields[i + 1])
  end
  redis.call(unpack(command))
  redis.call('XACK', KEYS[1], group, id)
  redis.call('HDEL', KEYS[3], id)
end

local reply = redis.call('XAUTOCLAIM', KEYS[1], group, consumer, min_idle, cursor, 'COUNT', count)
local next_cursor = reply[1]
local claimed, deleted, dead = {}, {}, {}
for _, entry in ipairs(reply[2]) do
  -- Redis 6.2 hands back a deleted entry as nil (or as an id with nil fields) and leaves it pending.
  if entry and entry[2] then
    local id = entry[1]
    local info = redis.call('XPENDING', KEYS[1], group, id, id, 1)[1]
    local deliveries = info and tonumber(info[4]) or 1
    if deliveries > max_deliveries then
      local err = redis.call('HGET', KEYS[3], id) or
        ('not acknowledged after ' .. max_deliveries .. ' deliveries (did its consumer die?)')
      dead_letter(id, deliveries - 1, entry[2], err)
      table.insert(dead, id)
    else
      table.insert(claimed, {id, deliveries, entry[2]})
    end
  elseif entry and entry[1] then
    redis.call('XACK', KEYS[1], group, entry[1])
    redis.call('HDEL', KEYS[3], entry[1])
    table.insert(deleted, entry[1])
  end
end
-- Redis 7 removes deleted entries from the pending list itself and lists their ids here.
for _, id in ipairs(reply[3] or {}) do
  redis.call('XACK', KEYS[1], group, id)
  redis.call('HDEL', KEYS[3], id)
  table.insert(deleted, id)
end
return {next_cursor, claimed, deleted, dead}
