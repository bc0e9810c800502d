-- KEYS[1] the user's index (sorted set of session ids)
-- KEYS[2..] the session hashes of the ids in ARGV[2..], in the same order
-- ARGV[1] mode: 'list' (drop dead ids, return the live ones) or 'destroy' (delete every
--         session of the user and the index)
-- ARGV[2..] the session ids the caller declared keys for
-- returns {0, {id, ...}} when the index holds ids the caller did not declare (nothing changed:
--   the caller sends again with all of them); else {1, {live id, ...}} for 'list' and
--   {1, number of sessions deleted} for 'destroy'
local mode = ARGV[1]
local declared = {}
for i = 2, #ARGV do
  declared[ARGV[i]] = i
end
local members = redis.call('ZRANGE', KEYS[1], 0, -1)
for _, id in ipairs(members) do
  if not declared[id] then
    return {0, members}
  end
end
if mode == 'destroy' then
  local deleted = 0
  for _, id in ipairs(members) do
    deleted = deleted + redis.call('DEL', KEYS[declared[id]])
  end
  redis.call('DEL', KEYS[1])
  return {1, deleted}
end
local live = {}
for _, id in ipairs(members) do
  if redis.call('EXISTS', KEYS[declared[id]]) == 1 then
    table.insert(live, id)
  else
    redis.call('ZREM', KEYS[1], id)
  end
end
return {1, live}
