-- KEYS[1] the session hash
-- ARGV[1] idle_ms: the store's sliding idle lifetime to grant from now (unless the session has
--         its own in field ':i')
-- ARGV[2] inline bytes: a session the server sizes above this is not returned here
-- returns nil when the session does not exist (expired, destroyed or never created: a hash
--   without ':c' is none, see session_write); else
--   {field, value, ..., now_ms, ttl_ms}: the whole hash, metadata fields (':'-prefixed)
--   included, then the server time and the lifetime just set (the idle lifetime, capped by
--   what is left before the absolute expiry ':a' and the session's own deadline ':d'); or,
--   for a session larger than ARGV[2], only {now_ms, ttl_ms}: the caller reads the hash with
--   a plain HGETALL, since every byte a script returns is copied into Lua and out again
--   (about 1.5 ms per MB) while HGETALL sends it as it is.
-- One read is MEMORY USAGE (of every field, SAMPLES 0: the default samples only the first
-- five a hash table holds, and misses a large one after them), HGETALL, TIME and PEXPIRE; the
-- metadata comes from the HGETALL reply (a large session asks HMGET for it instead of looking
-- through every field).
local idle_ms = tonumber(ARGV[1])
local size = redis.call('MEMORY', 'USAGE', KEYS[1], 'SAMPLES', 0)
if not size then
  return nil
end
local fields, n = {}, 0
if size <= tonumber(ARGV[2]) then
  fields = redis.call('HGETALL', KEYS[1])
  n = #fields
end
local created, own_idle, absolute, deadline
if n > 0 and n <= 32 then
  for i = 1, n, 2 do
    local name = fields[i]
    if string.byte(name, 1) == 58 then -- ':'
      if name == ':c' then
        created = true
      elseif name == ':i' then
        own_idle = fields[i + 1]
      elseif name == ':a' then
        absolute = fields[i + 1]
      elseif name == ':d' then
        deadline = fields[i + 1]
      end
    end
  end
else
  local meta = redis.call('HMGET', KEYS[1], ':c', ':i', ':a', ':d')
  created, own_idle, absolute, deadline = meta[1], meta[2], meta[3], meta[4]
end
if not created then
  -- no ':c': not a session but what a big write left of one that had ended (session_write);
  -- never returned, never given a lifetime
  return nil
end
local ttl = tonumber(own_idle) or idle_ms
local clock = redis.call('TIME')
local now = clock[1] * 1000 + math.floor(clock[2] / 1000)
if absolute and absolute - now < ttl then
  ttl = absolute - now
end
if deadline and deadline - now < ttl then
  ttl = deadline - now
end
if ttl <= 0 then
  -- the key's own TTL never outlives ':a' or ':d', so this is only reached within the same ms
  redis.call('DEL', KEYS[1])
  return nil
end
redis.call('PEXPIRE', KEYS[1], ttl)
fields[n + 1] = now
fields[n + 2] = ttl
return fields
