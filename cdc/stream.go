package cdc

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
)

// Timing of the stream loop.
const (
	// ackPoll is how long a receive waits while PubAcks are outstanding,
	// so a confirm follows its last PubAck closely.
	ackPoll = 2 * time.Millisecond
	// minStatusGap spaces the status updates that only report progress:
	// each one that moves the slot makes the walsender save the slot's
	// state, and more often slowed decoding down (pg_recvlogical reports
	// every 10 s).
	minStatusGap = time.Second
	// stateEvery is how often the confirmed position is recorded in the
	// state bucket.
	stateEvery = 5 * time.Second
	// drainTimeout bounds the wait for PubAcks at shutdown.
	drainTimeout = 10 * time.Second
)

// stream is one START_REPLICATION's loop. It reads messages in order, so
// every message before a keepalive has been handled when the keepalive
// is: the idle-slot confirm relies on that.
type stream struct {
	r    *Runner
	conn *pgconn.PgConn
	keys [][]string
	rels map[uint32]*relation
	tx   *tx
	gate gate // committed transactions not yet visible to other sessions
	pub  *publisher
	st   *state

	confirmed     pglogrepl.LSN // what we may confirm
	sent          pglogrepl.LSN // what the last status update said
	lastStatus    time.Time
	lastState     time.Time
	doneSeq       int // the last batch whose end is in confirmed
	sentSeq       int // the last batch whose end the server was told
	forceStatus   bool
	stateRecorded pglogrepl.LSN
}

// newStream reads from conn; db, a normal connection, takes the snapshots
// that tell when a commit is visible.
func newStream(r *Runner, conn *pgconn.PgConn, db *pgx.Conn, keys [][]string, confirmed pglogrepl.LSN, st *state, source string) *stream {
	name, n, _ := parseFailPoint(r.cfg.FailPoint)
	return &stream{
		r: r, conn: conn, keys: keys, rels: map[uint32]*relation{}, st: st, gate: gate{current: currentSnapshot(db)},
		confirmed: confirmed, sent: confirmed, stateRecorded: confirmed, lastState: time.Now(),
		pub: &publisher{js: r.js, pub: r.pub, slot: r.cfg.Slot, source: source, max: r.cfg.MaxInFlight, log: r.log,
			fail: failPoint{name: name, n: n}},
	}
}

func (s *stream) run(ctx context.Context) error {
	// One deadline context serves many receives: while catching up, a
	// context per message would cost more than the message.
	var rctx context.Context
	var rdeadline time.Time
	var stops []context.CancelFunc // at most one live; vet wants each kept
	defer func() {
		for _, c := range stops {
			c()
		}
	}()
	for {
		if ctx.Err() != nil {
			return s.drain(ctx)
		}
		if err := s.release(ctx); err != nil {
			if ctx.Err() != nil {
				return s.drain(ctx)
			}
			return err
		}
		deadline := s.lastStatus.Add(s.r.cfg.StatusInterval)
		if s.confirmed > s.sent { // a confirm to report: wake for it even if nothing arrives
			deadline = minTime(deadline, s.lastStatus.Add(minStatusGap))
		}
		if !s.pub.idle() {
			deadline = minTime(deadline, time.Now().Add(ackPoll))
		}
		if next := s.gate.waitUntil(); !next.IsZero() { // the oldest commit is not visible yet: look again then
			deadline = minTime(deadline, next)
		}
		if rctx == nil || rctx.Err() != nil || rdeadline.After(deadline) {
			for _, c := range stops {
				c()
			}
			c, cancel := context.WithDeadline(ctx, deadline)
			rctx, rdeadline, stops = c, deadline, append(stops[:0], cancel)
		}
		msg, err := s.conn.ReceiveMessage(rctx)
		if err != nil {
			if ctx.Err() != nil {
				return s.drain(ctx)
			}
			if !pgconn.Timeout(err) {
				return fmt.Errorf("cdc: receive: %w", err)
			}
		} else if err := s.handle(ctx, msg); err != nil {
			return err
		}
		if err := s.tick(ctx); err != nil {
			return err
		}
	}
}

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

func (s *stream) handle(ctx context.Context, msg pgproto3.BackendMessage) error {
	switch m := msg.(type) {
	case *pgproto3.CopyData:
		if len(m.Data) == 0 {
			return nil
		}
		switch m.Data[0] {
		case pglogrepl.PrimaryKeepaliveMessageByteID:
			pkm, err := pglogrepl.ParsePrimaryKeepaliveMessage(m.Data[1:])
			if err != nil {
				return fmt.Errorf("cdc: keepalive: %w", err)
			}
			// Nothing buffered, held or in flight: every commit before the
			// server's WAL end is done, so confirm it. Otherwise a slot
			// whose tables are idle holds back WAL while others are written.
			if s.tx == nil && s.gate.empty() && s.pub.idle() && pkm.ServerWALEnd > s.confirmed {
				s.confirmed = pkm.ServerWALEnd
			}
			s.forceStatus = s.forceStatus || pkm.ReplyRequested
		case pglogrepl.XLogDataByteID:
			xld, err := pglogrepl.ParseXLogData(m.Data[1:])
			if err != nil {
				return fmt.Errorf("cdc: XLogData: %w", err)
			}
			return s.logical(ctx, xld.WALData)
		}
		return nil
	case *pgproto3.ErrorResponse:
		return pgconn.ErrorResponseToPgError(m)
	case *pgproto3.CopyDone:
		return errors.New("cdc: the server ended the replication stream")
	}
	return nil
}

// logical handles one pgoutput message.
func (s *stream) logical(ctx context.Context, data []byte) error {
	msg, err := pglogrepl.Parse(data)
	if err != nil {
		return fmt.Errorf("cdc: decode pgoutput message: %w", err)
	}
	switch m := msg.(type) {
	case *pglogrepl.RelationMessage:
		s.rels[m.RelationID] = newRelation(m, s.r.cfg.Tables, s.keys)
	case *pglogrepl.BeginMessage:
		s.tx = newTx(m, s.r.cfg.MaxTxEvents, s.r.cfg.Tables)
	case *pglogrepl.InsertMessage:
		return s.row(m.RelationID, func(t *tx, r *relation) { t.insert(r, m) })
	case *pglogrepl.UpdateMessage:
		return s.row(m.RelationID, func(t *tx, r *relation) { t.update(r, m) })
	case *pglogrepl.DeleteMessage:
		return s.row(m.RelationID, func(t *tx, r *relation) { t.del(r, m) })
	case *pglogrepl.TruncateMessage:
		for _, id := range m.RelationIDs {
			if err := s.row(id, func(t *tx, r *relation) { t.truncate(r) }); err != nil {
				return err
			}
		}
	case *pglogrepl.LogicalDecodingMessage:
		return s.message(ctx, m)
	case *pglogrepl.CommitMessage:
		return s.commit(ctx, m)
	}
	return nil
}

// row applies add to a change of a mapped table inside a transaction.
func (s *stream) row(id uint32, add func(*tx, *relation)) error {
	rel, ok := s.rels[id]
	switch {
	case !ok:
		return fmt.Errorf("cdc: change of relation %d before its Relation message", id)
	case s.tx == nil:
		return fmt.Errorf("cdc: change of relation %d outside a transaction", id)
	case rel.table == nil:
		return nil // a table the publication has but the rules do not map
	}
	add(s.tx, rel)
	return nil
}

// message handles pg_logical_emit_message: a transactional one with our
// prefix joins its transaction; a non-transactional one is published at
// once (it confirms nothing: it has no commit).
func (s *stream) message(ctx context.Context, m *pglogrepl.LogicalDecodingMessage) error {
	if m.Prefix != MessagePrefix {
		return nil
	}
	if m.Transactional && s.tx != nil {
		s.tx.message(m.Content)
		return nil
	}
	c := messageChange(m.Content)
	msgs, err := s.pub.messages([]change{c}, m.LSN, time.Now())
	if err != nil {
		return err
	}
	s.r.cfg.Observer.Event(c.entity, c.action)
	return s.pub.submit(ctx, &batch{msgs: msgs, commitTime: time.Now()}, s.waiting(ctx))
}

// commit hands the transaction to the gate, which publishes its events
// once the transaction is visible to other sessions (see release). Its
// end is confirmed once they and every earlier transaction's are
// acknowledged (see tick).
func (s *stream) commit(ctx context.Context, m *pglogrepl.CommitMessage) error {
	if s.tx == nil {
		return errors.New("cdc: commit outside a transaction")
	}
	changes := s.tx.events()
	xid := s.tx.xid
	s.tx = nil
	s.r.update(func(st *Status) { st.LastCommitLSN, st.LastCommitAt = m.CommitLSN.String(), m.CommitTime.UTC() })
	if len(changes) == 0 && s.gate.empty() && s.pub.idle() {
		s.confirmed = max(s.confirmed, m.TransactionEndLSN)
		return nil
	}
	return s.hold(ctx, &pendingTx{xid: xid, check: len(changes) > 0, changes: changes, commitLSN: m.CommitLSN,
		endLSN: m.TransactionEndLSN, commitTime: m.CommitTime, heldAt: time.Now()})
}

// hold puts p behind the transactions the gate holds. While the gate
// holds MaxInFlight transactions or events, it waits for the oldest to
// become visible, so memory stays bounded however long a commit takes
// to become visible.
func (s *stream) hold(ctx context.Context, p *pendingTx) error {
	s.gate.push(p)
	for len(s.gate.pending) >= s.r.cfg.MaxInFlight || s.gate.events >= s.r.cfg.MaxInFlight {
		if !sleep(ctx, time.Until(s.gate.waitUntil())) {
			return ctx.Err()
		}
		if err := s.release(ctx); err != nil {
			return err
		}
		if err := s.tick(ctx); err != nil {
			return err
		}
	}
	return nil
}

// release publishes the events of the held transactions that are now
// visible, in commit order. A snapshot that cannot be read is an error:
// the session ends and starts again, and nothing unverified is published.
func (s *stream) release(ctx context.Context) error {
	if s.gate.empty() {
		return nil
	}
	now := time.Now()
	ready, err := s.gate.ready(ctx, now)
	for _, p := range ready {
		if perr := s.publish(ctx, p, now); perr != nil {
			return perr
		}
	}
	return err
}

// publish submits a visible transaction's events.
func (s *stream) publish(ctx context.Context, p *pendingTx, now time.Time) error {
	if !p.missedAt.IsZero() {
		wait := now.Sub(p.heldAt)
		s.r.cfg.Observer.VisibilityWait(wait)
		level, msg := slog.LevelDebug, "waited for a commit to become visible before publishing its events"
		if wait >= visibilitySlow {
			level, msg = slog.LevelWarn, "⚠️ "+msg
		}
		s.r.log.Log(ctx, level, msg,
			slog.Uint64("xid", uint64(p.xid)), slog.String("commit_lsn", p.commitLSN.String()), slog.Duration("wait", wait))
	}
	msgs, err := s.pub.messages(p.changes, p.commitLSN, p.commitTime)
	if err != nil {
		return err
	}
	for _, c := range p.changes {
		s.r.cfg.Observer.Event(c.entity, c.action)
	}
	if len(msgs) == 0 && s.pub.idle() {
		s.confirmed = max(s.confirmed, p.endLSN)
		return nil
	}
	return s.pub.submit(ctx, &batch{endLSN: p.endLSN, commitTime: p.commitTime, msgs: msgs}, s.waiting(ctx))
}

// waiting is called while a publish waits for room: it keeps confirming
// and sending status updates.
func (s *stream) waiting(ctx context.Context) func() error {
	return func() error { return s.tick(ctx) }
}

// tick takes the PubAcks that arrived, confirms the transactions wholly
// acknowledged, and sends a status update when one is due.
func (s *stream) tick(ctx context.Context) error {
	done, err := s.pub.poll(ctx)
	if err != nil {
		return err
	}
	for _, b := range done {
		if b.seq > 0 {
			s.pub.fail.hit("after-puback", b.seq, s.r.log)
			s.doneSeq = b.seq
		}
		if b.endLSN == 0 {
			continue
		}
		s.confirmed = max(s.confirmed, b.endLSN)
		s.r.cfg.Observer.Transaction(time.Since(b.commitTime))
	}
	return s.status(ctx)
}

// status sends a standby status update when the confirmed position moved
// (at most every minStatusGap), when the server asked, or every
// StatusInterval. Write, flush and apply are all set: pglogrepl would take
// flush from write when it is 0.
func (s *stream) status(ctx context.Context) error {
	now := time.Now()
	due := s.forceStatus || now.Sub(s.lastStatus) >= s.r.cfg.StatusInterval ||
		(s.confirmed > s.sent && now.Sub(s.lastStatus) >= minStatusGap)
	if !due {
		return nil
	}
	pos := s.confirmed
	err := pglogrepl.SendStandbyStatusUpdate(ctx, s.conn, pglogrepl.StandbyStatusUpdate{
		WALWritePosition: pos, WALFlushPosition: pos, WALApplyPosition: pos, ClientTime: now})
	if err != nil {
		return fmt.Errorf("cdc: standby status: %w", err)
	}
	s.sent, s.lastStatus, s.forceStatus = pos, now, false
	if s.doneSeq > s.sentSeq {
		if f := s.pub.fail; f.name == "after-confirm" && f.n > s.sentSeq && f.n <= s.doneSeq {
			f.hit("after-confirm", f.n, s.r.log) // its end is in this confirm
		}
		s.sentSeq = s.doneSeq
	}
	s.r.update(func(st *Status) { st.ConfirmedLSN = pos.String() })
	if pos > s.stateRecorded && now.Sub(s.lastState) >= stateEvery {
		s.lastState = now
		if err := s.st.put(ctx, slotState{ConfirmedLSN: pos.String()}); err != nil {
			s.r.log.Warn("⚠️ could not record the slot's position", slog.Any("error", err))
		} else {
			s.stateRecorded = pos
		}
	}
	return nil
}

// drain is the shutdown: no more reading; wait (at most drainTimeout) for
// the PubAcks in flight, confirm what they complete, and say so.
func (s *stream) drain(ctx context.Context) error {
	dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), drainTimeout)
	defer cancel()
	for !s.gate.empty() && dctx.Err() == nil { // best effort: what stays held is sent again after a restart
		if !sleep(dctx, time.Until(s.gate.waitUntil())) || s.release(dctx) != nil {
			break
		}
	}
	for !s.pub.idle() && dctx.Err() == nil {
		if err := s.pub.waitOldest(dctx, func() error { return nil }); err != nil {
			break
		}
		if err := s.tick(dctx); err != nil {
			break
		}
	}
	s.forceStatus = true
	err := s.status(dctx)
	s.r.log.Info("🔌 replication stopped", slog.String("confirmed", s.confirmed.String()), slog.Bool("all_acknowledged", s.pub.idle()),
		slog.Int("held_invisible", len(s.gate.pending)))
	if err == nil && s.confirmed > s.stateRecorded {
		_ = s.st.put(dctx, slotState{ConfirmedLSN: s.confirmed.String()})
	}
	return nil
}
