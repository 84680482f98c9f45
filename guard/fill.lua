-- fill.lua: the guarded write after reading the source.
-- KEYS[1]   the cache key K
-- KEYS[2..] its guard generations, in the order of read.lua
-- ARGV[1]   the payload (JSON)
-- ARGV[2]   the value's TTL in ms
-- ARGV[3..] the tokens claim.lua returned, in the same order
-- Writes '@gen <token> <token> ...\n' .. payload to K and returns 1 only if
-- every generation still holds its claimed token; otherwise writes nothing
-- and returns 0: an invalidation ran since the claim, the payload may be
-- older than it.
local head = '@gen'
for i = 2, #KEYS do
  local g = redis.call('GET', KEYS[i]) or '0'
  if g ~= ARGV[i + 1] then return 0 end
  head = head .. ' ' .. g
end
redis.call('SET', KEYS[1], head .. '\n' .. ARGV[1], 'PX', ARGV[2])
return 1
