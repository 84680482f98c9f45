-- cluster_unfill.lua: take back a fill whose scope generation moved.
-- KEYS[1]  the cache key K
-- ARGV[1]  the stamp cluster_fill.lua wrote ('@gen ...\n')
-- UNLINKs K only if its value still starts with that stamp (any value with
-- it is as old), and returns the count removed.
if redis.call('GETRANGE', KEYS[1], 0, #ARGV[1] - 1) == ARGV[1] then
  return redis.call('UNLINK', KEYS[1])
end
return 0
