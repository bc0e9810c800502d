-- KEYS[1] the stream, {stream:<name>}
-- KEYS[2] the dead-letter stream, {stream:<name>}:dead
-- ARGV[1] group: created at id 0 (XGROUP CREATE ... MKSTREAM) if the stream is gone, as in
--         streams_add, so the group sees the replayed entries
-- ARGV[2] max_len: approximate trimming of the stream on each re-add (MAXLEN ~); 0 means none
-- ARGV[3] mode: 'ids' to replay the dead letters listed in ARGV[5..], or 'oldest' to replay the
--         oldest ARGV[4] dead letters with an id <= ARGV[5]
-- ARGV[4] count (mode 'oldest')
-- ARGV[5..] mode 'ids': dead-letter ids; mode 'oldest': the last id to consider, '+' meaning
--           the newest dead letter now (so letters dead-lettered again meanwhile wait for a
--           later call instead of going round in a loop)
-- returns {last, replayed, missing}:
--   last: the id bound used (mode 'oldest'; '' when there were no dead letters)
--   replayed: {dead_id, new_id, dead_id, new_id, ...}
--   missing: dead-letter ids (mode 'ids') that are not (or no longer) in the dead-letter stream
--
-- Each letter is re-added before it is deleted, in one script: a failure part-way can leave a
-- letter in both streams (handled once more), never in neither. The re-added entry carries the
-- original fields, '_rp.replays' (how many times it was replayed, this time included) and
-- '_rp.original_id' (the id it had when it was first added).
if redis.replicate_commands then pcall(redis.replicate_commands) end
local group = ARGV[1]
local max_len = tonumber(ARGV[2])
local mode = ARGV[3]

if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('XGROUP', 'CREATE', KEYS[1], group, '0', 'MKSTREAM')
end

local function replay(entry)
  local dead_id, fields = entry[1], entry[2]
  local meta = {}
  for i = 1, #fields, 2 do meta[fields[i]] = fields[i + 1] end
  local command = {'XADD', KEYS[1]}
  if max_len > 0 then
    table.insert(command, 'MAXLEN')
    table.insert(command, '~')
    table.insert(command, max_len)
  end
  table.insert(command, '*')
  local replays, original = 0, meta['id'] or ''
  for i = 1, #fields, 2 do
    local name = fields[i]
    if name == 'data._rp.replays' then
      replays = tonumber(fields[i + 1]) or 0
    elseif name == 'data._rp.original_id' then
      original = fields[i + 1]
    elseif string.sub(name, 1, 5) == 'data.' then
      table.insert(command, string.sub(name, 6))
      table.insert(command, fields[i + 1])
    end
  end
  table.insert(command, '_rp.replays')
  table.insert(command, replays + 1)
  table.insert(command, '_rp.original_id')
  table.insert(command, original)
  local new_id = redis.call(unpack(command))
  redis.call('XDEL', KEYS[2], dead_id)
  return new_id
end

local replayed, missing = {}, {}
local last = ''
if mode == 'ids' then
  for i = 5, #ARGV do
    local entry = redis.call('XRANGE', KEYS[2], ARGV[i], ARGV[i])[1]
    if entry then
      table.insert(replayed, entry[1])
      table.insert(replayed, replay(entry))
    else
      table.insert(missing, ARGV[i])
    end
  end
else
  last = ARGV[5]
  if last == '+' then
    local newest = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', 1)[1]
    last = newest and newest[1] or ''
  end
  if last ~= '' then
    for _, entry in ipairs(redis.call('XRANGE', KEYS[2], '-', last, 'COUNT', ARGV[4])) do
      table.insert(replayed, entry[1])
      table.insert(replayed, replay(entry))
    end
  end
end
return {last, replayed, missing}
