-- KEYS[1] the stream, {stream:<name>}
-- ARGV[1] group
-- ARGV[2] count: the most entries to list, oldest first
-- ARGV[3] (optional) consumer: list only this consumer's entries
-- returns the extended XPENDING reply unchanged: {{id, consumer, idle_ms, deliveries}, ...}
-- (a script, because redis-py's reply callback for a plain XPENDING expects the summary form)
local command = {'XPENDING', KEYS[1], ARGV[1], '-', '+', ARGV[2]}
if ARGV[3] then table.insert(command, ARGV[3]) end
return redis.call(unpack(command))
