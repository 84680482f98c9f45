package logging

import (
	"context"
	"fmt"
	"log/slog"
	"net"

	"github.com/redis/go-redis/v9"
)

// RedisLogger adapts slog to go-redis's internal logger (redis.SetLogger),
// at debug level: the worker reports Redis trouble itself, once, as a warning.
type RedisLogger struct{ Log *slog.Logger }

// Printf implements go-redis's internal.Logging.
func (l RedisLogger) Printf(ctx context.Context, format string, v ...any) {
	l.Log.DebugContext(ctx, "🔌 go-redis: "+fmt.Sprintf(format, v...))
}

// RedisHook logs every Redis connection the pool opens (🔌, debug) and every
// dial that fails (❌, debug: the worker's health gate warns once per outage).
type RedisHook struct{ Log *slog.Logger }

// DialHook implements redis.Hook.
func (h RedisHook) DialHook(next redis.DialHook) redis.DialHook {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := next(ctx, network, addr)
		if err != nil {
			h.Log.DebugContext(ctx, "❌ Redis connection failed", slog.String("addr", addr), slog.Any("error", err))
			return nil, err
		}
		h.Log.DebugContext(ctx, "🔌 Redis connection opened", slog.String("addr", addr))
		return c, nil
	}
}

// ProcessHook implements redis.Hook.
func (h RedisHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook { return next }

// ProcessPipelineHook implements redis.Hook.
func (h RedisHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}
