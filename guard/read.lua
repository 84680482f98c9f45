-- read.lua: read a cache key through the invalidator protocol.
-- KEYS[1]  the cache key K
-- KEYS[2..] its guard generations: invalidator:gen:<K>, then
--           invalidator:gen:<P> for each segment prefix P of K, shortest first
-- Returns the payload stored in K when K's stamp equals the current
-- generations (a missing generation reads '0'), else false: a miss. One
-- GET, one MGET, O(number of guard keys); no SCAN.
local v = redis.call('GET', KEYS[1])
if not v then return false end
local g = redis.call('MGET', unpack(KEYS, 2))
for i = 1, #g do
  if not g[i] then g[i] = '0' end
end
local head = '@gen ' .. table.concat(g, ' ') .. '\n'
if string.sub(v, 1, #head) ~= head then return false end
return string.sub(v, #head + 1)
