package guard

import (
	_ "embed"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// The scripts of the protocol, shipped as files of this directory so that
// services in other languages load the very same code (README, "For
// services: the cache package").
var (
	//go:embed read.lua
	ReadScript string
	//go:embed claim.lua
	ClaimScript string
	//go:embed fill.lua
	FillScript string
	//go:embed set.lua
	SetScript string
	//go:embed cluster_fill.lua
	ClusterFillScript string
	//go:embed cluster_unfill.lua
	ClusterUnfillScript string
)

// rawFill is fill.lua for an unstamped value (Protocol.ClaimRaw): it
// writes ARGV[1] to KEYS[1] only if every generation KEYS[2..] still holds
// its claimed token ARGV[3..], and returns 1, else 0. On a Redis Cluster it
// runs with the key's own generation only (the scopes are covered by the
// fill registries).
const rawFill = `
for i = 2, #KEYS do
  local g = redis.call('GET', KEYS[i]) or '0'
  if g ~= ARGV[i + 1] then return 0 end
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
`

var (
	claimScript         = redis.NewScript(ClaimScript)
	fillScript          = redis.NewScript(FillScript)
	setScript           = redis.NewScript(SetScript)
	clusterFillScript   = redis.NewScript(ClusterFillScript)
	clusterUnfillScript = redis.NewScript(ClusterUnfillScript)
	rawFillScript       = redis.NewScript(rawFill)
)

// ttlArg is TTL in ms, as the scripts take it.
var ttlArg = ms(TTL)

func ms(d time.Duration) string { return strconv.FormatInt(d.Milliseconds(), 10) }
