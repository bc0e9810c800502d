-- KEYS[1] the stream, {stream:<name>}
-- KEYS[2] the dead-letter stream, {stream:<name>}:dead
-- KEYS[3] the last-error hash, {stream:<name>}:errors
-- ARGV[1] group
-- ARGV[2] consumer settling its batch
-- ARGV[3] max_deliveries: a failure on this delivery or a later one dead-letters the entry
-- ARGV[4] release_idle_ms: idle time given to released entries, so any consumer may claim them now
-- ARGV[5] n_ack, ARGV[6] n_fail, ARGV[7] n_release
-- ARGV[8] leave: 1 to delete this consumer from the group if (and only if) it holds nothing pending
-- ARGV[9..] n_ack ids handled successfully, then n_fail triples (id, deliveries, error),
--           then n_release pairs (id, deliveries) read but not handled (the worker is stopping)
-- returns {acked, dead_lettered, released, left (1 if the consumer was deleted)}
if redis.replicate_commands then pcall(redis.replicate_commands) end
local group = ARGV[1]
local consumer = ARGV[2]
local max_deliveries = tonumber(ARGV[3])
local release_idle = ARGV[4]
local n_ack, n_fail, n_release = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])
local leave = ARGV[8] == '1'

-- Still pending to this consumer? (Another consumer may have claimed it meanwhile: then it is theirs.)
local function owned(id)
  local info = redis.call('XPENDING', KEYS[1], group, id, id, 1)[1]
  return info ~= nil and info[2] == consumer
end

local acked, dead, released, left = 0, 0, 0, 0
local i = 9
if n_ack > 0 then
  local ids = {}
  for j = i, i + n_ack - 1 do table.insert(ids, ARGV[j]) end
  acked = redis.call('XACK', KEYS[1], group, unpack(ids))
  redis.call('HDEL', KEYS[3], unpack(ids))
  i = i + n_ack
end
for _ = 1, n_fail do
  local id, deliveries, err = ARGV[i], tonumber(ARGV[i + 1]), ARGV[i + 2]
  i = i + 3
  if owned(id) then
    if deliveries >= max_deliveries then
      local command = {'XADD', KEYS[2], '*', 'id', id, 'group', group, 'consumer', consumer,
                       'deliveries', deliveries, 'error', err}
      local found = redis.call('XRANGE', KEYS[1], id, id)[1]
      if found then
        for k = 1, #found[2], 2 do
          table.insert(command, 'data.' .. found[2][k])
          table.insert(command, found[2][k + 1])
        end
      end
      redis.call(unpack(command))
      redis.call('XACK', KEYS[1], group, id)
      redis.call('HDEL', KEYS[3], id)
      dead = dead + 1
    else
      -- Stays pending: retried by whichever consumer claims it after min_idle.
      redis.call('HSET', KEYS[3], id, err)
    end
  end
end
for _ = 1, n_release do
  local id, deliveries = ARGV[i], tonumber(ARGV[i + 1])
  i = i + 2
  if owned(id) then
    -- JUSTID + RETRYCOUNT: the delivery that never reached the handler is not counted.
    redis.call('XCLAIM', KEYS[1], group, consumer, 0, id, 'IDLE', release_idle,
               'RETRYCOUNT', math.max(deliveries - 1, 0), 'JUSTID')
    released = released + 1
  end
end
if leave then
  local mine = redis.call('XPENDING', KEYS[1], group, '-', '+', 1, consumer)
  if #mine == 0 then
    redis.call('XGROUP', 'DELCONSUMER', KEYS[1], group, consumer)
    left = 1
  end
end
return {acked, dead, released, left}
