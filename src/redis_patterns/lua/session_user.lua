-- KEYS[1] the user's index (sorted set of session ids)
-- KEYS[2..] the session hashes of the ids in ARGV[2..], in the same order
-- ARGV[1] mode: 'list' (drop dead ids, report live ones) or 'destroy' (delete sessions)
-- ARGV[2..] the session ids the caller declared keys for (scripts only touch declared keys)
-- returns {result, {undeclared id, ...}}: the ids in the index the caller did not declare
--   (untouched), and as result, for 'list', the live declared ids (dead ones leave the index);
--   for 'destroy', how many declared sessions were deleted (their ids leave the index, which
--   disappears once empty)
local mode = ARGV[1]
local declared = {}
for i = 2, #ARGV do
  declared[ARGV[i]] = i
end
local members = redis.call('ZRANGE', KEYS[1], 0, -1)
local undeclared = {}
local live = {}
local deleted = 0
for _, id in ipairs(members) do
  local k = declared[id]
  if not k then
    table.insert(undeclared, id)
  elseif mode == 'destroy' then
    deleted = deleted + redis.call('DEL', KEYS[k])
    redis.call('ZREM', KEYS[1], id)
  elseif redis.call('HEXISTS', KEYS[k], ':c') == 1 then  -- a session holds ':c' (session_write)
    table.insert(live, id)
  else
    redis.call('ZREM', KEYS[1], id)
  end
end
if mode == 'destroy' then
  return {deleted, undeclared}
end
return {live, undeclared}
