-- KEYS[1] a namespace generation counter (the only one standalone; one per bucket on a cluster)
-- ARGV[1] invalidation channel ("" = no near caches to tell)
-- ARGV[2] origin: the writer's id; the message "<origin>:*" tells near caches to drop everything
-- returns the new generation: every entry stamped with an older one is now a miss
local channel = ARGV[1]
local origin = ARGV[2]
local generation = redis.call('INCR', KEYS[1])
if channel ~= '' then
  redis.call('PUBLISH', channel, origin .. ':*')
end
return generation
