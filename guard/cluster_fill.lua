-- cluster_fill.lua: the guarded write on a Redis Cluster, in the key's slot.
-- KEYS[1]  the cache key K
-- KEYS[2]  its own generation, invalidator:gen:{<tag>}K: hash-tagged into
--          K's slot (see the README for the tag of each slot)
-- ARGV[1]  the payload (JSON)
-- ARGV[2]  the value's TTL in ms
-- ARGV[3]  the token claimed on KEYS[2]
-- ARGV[4]  the stamp: '@gen <token> <token> ...\n', the tokens claimed on
--          the guard generations in the order of read.lua
-- Writes the stamp .. payload to K and returns 1 only if K's own
-- generation still holds its claimed token; otherwise 0. The scope
-- generations live in other slots: the client checks them after this
-- (GET each) and runs cluster_unfill.lua if one moved.
local g = redis.call('GET', KEYS[2]) or '0'
if g ~= ARGV[3] then return 0 end
redis.call('SET', KEYS[1], ARGV[4] .. ARGV[1], 'PX', ARGV[2])
return 1
