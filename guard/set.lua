-- set.lua: an unconditional write, stamped with the current generations.
-- KEYS      as in fill.lua
-- ARGV[1]   the payload (JSON)
-- ARGV[2]   the value's TTL in ms
-- ARGV[3]   a fresh token, for generations that are missing (as claim.lua)
-- ARGV[4]   the generation TTL in ms
-- Claims every generation and writes the stamped value, atomically.
-- Returns 1.
local head = '@gen'
for i = 2, #KEYS do
  local g = redis.call('GET', KEYS[i])
  if not g then
    redis.call('SET', KEYS[i], ARGV[3], 'PX', ARGV[4])
    g = ARGV[3]
  end
  head = head .. ' ' .. g
end
redis.call('SET', KEYS[1], head .. '\n' .. ARGV[1], 'PX', ARGV[2])
return 1
