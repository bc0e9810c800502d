-- KEYS[1] the session hash
-- ARGV[1] idle_ms: the store's sliding idle lifetime to grant from now (unless the session has
--         its own in field ':i')
-- returns nil when the session does not exist (expired, destroyed or never created); else
--   {now_ms, ttl_ms, {field, value, ...}}: server time, the lifetime just set (the idle
--   lifetime, capped by what is left before the absolute expiry ':a' and the session's own
--   deadline ':d') and the whole hash, metadata fields (':'-prefixed) included
local idle_ms = tonumber(ARGV[1])
local fields = redis.call('HGETALL', KEYS[1])
if #fields == 0 then
  return nil
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local meta = redis.call('HMGET', KEYS[1], ':i', ':a', ':d')
local ttl = tonumber(meta[1]) or idle_ms
for i = 2, 3 do
  if meta[i] then
    local left = tonumber(meta[i]) - now
    if left <= 0 then
      -- the key's own TTL never outlives ':a' or ':d', so this is only reached within the
      -- same ms
      redis.call('DEL', KEYS[1])
      return nil
    end
    if left < ttl then
      ttl = left
    end
  end
end
redis.call('PEXPIRE', KEYS[1], string.format('%.0f', ttl))
return {string.format('%.0f', now), string.format('%.0f', ttl), fields}
