package worker

import (
	"context"
	"errors"
	"io"
	"net"
	"strconv"
	"strings"
	"syscall"
	"unicode/utf8"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/redis/go-redis/v9"
)

// This file is the one place that decides what an error means for an event:
// retry after an outage (transient), dead-letter at once (ErrPermanent), or
// stop the worker because its setup will never work (fatalSetup).

// ErrPermanent marks an event that no retry can apply (malformed or
// rejected): it is dead-lettered at once. Check with errors.Is.
var ErrPermanent = errors.New("permanent failure")

// ErrJetStreamDisabled means the NATS server answers but has no JetStream:
// the worker cannot run there, and waiting will not change it.
var ErrJetStreamDisabled = errors.New("JetStream is not enabled on the NATS server (start nats-server with -js, or enable jetstream in its config)")

// permanent wraps err so that errors.Is(err, ErrPermanent) holds while the
// message stays err's own.
type permanent struct{ error }

func (p permanent) Is(target error) bool { return target == ErrPermanent }
func (p permanent) Unwrap() error        { return p.error }

// transient reports whether err means "Redis is not reachable or not ready
// now", as opposed to an answer about this command: a network error, a
// closed or timed-out connection, or a server that is loading, busy with a
// script, read-only after a failover, or re-sharding.
func transient(err error) bool {
	if err == nil {
		return false
	}
	var rerr redis.Error
	if errors.As(err, &rerr) {
		return redis.IsLoadingError(err) || redis.IsReadOnlyError(err) || redis.IsClusterDownError(err) ||
			redis.IsTryAgainError(err) || redis.IsMasterDownError(err) || redis.HasErrorPrefix(err, "BUSY")
	}
	var nerr net.Error
	return errors.As(err, &nerr) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET) ||
		errors.Is(err, syscall.EPIPE) || errors.Is(err, redis.ErrPoolTimeout) || errors.Is(err, redis.ErrClosed) ||
		errors.Is(err, context.DeadlineExceeded)
}

// permissionDenied reports whether Redis refused a command or a key to the
// worker's ACL user (NOPERM): a misconfiguration to wait out, like an
// outage, not a reason to dead-letter the event.
func permissionDenied(err error) bool {
	return err != nil && redis.IsPermissionError(err)
}

// fatalSetup reports whether a stream or consumer setup error will not go
// away by waiting: the server refuses the configuration (subjects that
// overlap another stream's, say), it has no JetStream at all, or the
// connection is closed for good.
func fatalSetup(err error) bool {
	if errors.Is(err, ErrJetStreamDisabled) || errors.Is(err, nats.ErrConnectionClosed) {
		return true
	}
	var api *jetstream.APIError
	return errors.As(err, &api) && api.Code == 400
}

// jetStreamDisabled turns the answers of a server without JetStream into
// ErrJetStreamDisabled.
func jetStreamDisabled(err error) error {
	if errors.Is(err, jetstream.ErrJetStreamNotEnabled) || errors.Is(err, jetstream.ErrJetStreamNotEnabledForAccount) {
		return ErrJetStreamDisabled
	}
	return nil
}

// truncate shortens s to at most n bytes without splitting a UTF-8 sequence.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

// termWithReasonSince is the first nats-server release that honours
// "+TERM <reason>"; older servers ignore it and redeliver the message.
var termWithReasonSince = [3]int{2, 10, 4}

// atLeast reports whether version ("2.9.10", "v2.10.4-beta") is at least min.
// An unknown version counts as old: the plain term works everywhere.
func atLeast(version string, min [3]int) bool {
	version = strings.TrimPrefix(version, "v")
	version, _, _ = strings.Cut(version, "-")
	parts := strings.Split(version, ".")
	if len(parts) != 3 {
		return false
	}
	for i, p := range parts {
		n, err := strconv.Atoi(p)
		if err != nil {
			return false
		}
		if n != min[i] {
			return n > min[i]
		}
	}
	return true
}
