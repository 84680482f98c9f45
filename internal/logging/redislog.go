package logging

import (
	"context"
	"fmt"
	"log/slog"
)

// RedisLogger adapts slog to go-redis's internal logger (redis.SetLogger),
// at debug level: the worker reports Redis trouble itself, once, as a warning.
type RedisLogger struct{ Log *slog.Logger }

// Printf implements go-redis's internal.Logging.
func (l RedisLogger) Printf(ctx context.Context, format string, v ...any) {
	l.Log.DebugContext(ctx, "🔌 go-redis: "+fmt.Sprintf(format, v...))
}
