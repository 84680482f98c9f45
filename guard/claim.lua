-- claim.lua: claim the guard generations of a key before reading the source.
-- KEYS     the guard generations (as in read.lua, without the cache key)
-- ARGV[1]  a fresh token: unique, never '0', no spaces or newlines
-- ARGV[2]  the generation TTL in ms (86400000)
-- Returns, for each key, the token it holds after the claim: the one it
-- held, or ARGV[1] where it was missing (then set with the TTL). The same
-- as SET <key> <token> NX GET PX <ttl> for each key.
local out = {}
for i = 1, #KEYS do
  local g = redis.call('GET', KEYS[i])
  if not g then
    redis.call('SET', KEYS[i], ARGV[1], 'PX', ARGV[2])
    g = ARGV[1]
  end
  out[i] = g
end
return out
