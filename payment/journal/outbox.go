package journal

// The outbox: when the fleet link is on, every transaction that writes an
// order or a refund also writes that change as a versioned event
// (fleet/event) into the outbox table, in the same transaction, so a sale
// pays no extra fsync and no event can be lost or invented by a crash. The
// lane's publisher reads the outbox through its own connection and deletes
// what JetStream has acknowledged, keeping the newest row (marked sent) so
// the sequence, MAX(seq) + 1, never restarts; that spares each sale a
// counter update. Events of a commit made without its own fsync (a code's
// link, a sale's outcome) wait in the outbox until an fsync covers them
// (Outbox.HoldUndurable): a power cut can undo such a commit, and its
// sequence numbers would then be reused for other events. The backlog is
// bounded: past fleet_max_backlog unsent events the oldest are dropped and
// counted.

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/scanpay/scanpay/fleet/event"
)

// outboxSchema is schema version 4: the outbox and its meta keys. It is
// part of every new journal and the migration from version 3.
const outboxSchema = `
CREATE TABLE IF NOT EXISTS outbox (
	seq   INTEGER PRIMARY KEY,
	at    INTEGER NOT NULL,
	event BLOB NOT NULL,
	sent  INTEGER NOT NULL DEFAULT 0
);
INSERT OR IGNORE INTO meta(key, value) VALUES
	('fleet_lane', ''), ('fleet_max_backlog', '100000'), ('outbox_dropped', '0');
`

// fleetSetting is the outbox's switch as the journal's meta table has it,
// kept in memory so that a sale pays nothing for it while the fleet is off.
type fleetSetting struct {
	lane       string
	maxBacklog uint64
	st         *outboxStmts
}

// outboxStmts are emit's statements, prepared once (a sale's transactions
// run them three times).
type outboxStmts struct {
	nextSeq, insert, refund *sql.Stmt
}

// loadFleet reads the switch and prepares the outbox's statements at Open.
func (j *Journal) loadFleet() error {
	var lane, max sql.NullString
	err := j.db.QueryRow(`SELECT (SELECT value FROM meta WHERE key = 'fleet_lane'), (SELECT value FROM meta WHERE key = 'fleet_max_backlog')`).Scan(&lane, &max)
	if err != nil {
		return fmt.Errorf("fleet setting: %w", err)
	}
	n, _ := strconv.ParseUint(max.String, 10, 64)
	st := &outboxStmts{}
	for _, p := range []struct {
		dst **sql.Stmt
		q   string
	}{
		{&st.nextSeq, `SELECT COALESCE(MAX(seq), 0) + 1 FROM outbox`},
		{&st.insert, `INSERT INTO outbox(seq, at, event) VALUES (?,?,?)`},
		{&st.refund, `SELECT mch_refund_no, amount, state, message, created_at, updated_at FROM refunds WHERE mch_refund_no = ?`},
	} {
		if *p.dst, err = j.db.Prepare(p.q); err != nil {
			return fmt.Errorf("fleet statements: %w", err)
		}
		j.raw.register(*p.dst, p.q)
	}
	j.fleet.Store(&fleetSetting{lane: lane.String, maxBacklog: n, st: st})
	return nil
}

// emit writes the event for a change to order no (and refund refundNo, when
// not empty) into the outbox, inside the caller's transaction. It does
// nothing while the fleet link is off.
func (j *Journal) emit(t *wtx, kind, no, refundNo string) error {
	f := j.fleet.Load()
	if f == nil || f.lane == "" {
		return nil
	}
	o, err := scanOrder(t.row(j.st.getOrder, no))
	if err != nil {
		return fmt.Errorf("outbox: read order %s: %w", no, err)
	}
	ev := event.Event{V: event.Version, Lane: f.lane, Kind: kind, At: time.UnixMilli(ms(j.now())).UTC(), Order: eventOrder(o)}
	if refundNo != "" {
		var r event.Refund
		var c, u int64
		err := t.row(f.st.refund, refundNo).Scan(&r.MchRefundNo, &r.Amount, &r.State, &r.Message, &c, &u)
		if err != nil {
			return fmt.Errorf("outbox: read refund %s: %w", refundNo, err)
		}
		r.Message = clip(r.Message)
		r.CreatedAt, r.UpdatedAt = time.UnixMilli(c).UTC(), time.UnixMilli(u).UTC()
		ev.Refund = &r
	}
	if err := t.row(f.st.nextSeq).Scan(&ev.Seq); err != nil {
		return err
	}
	data, err := json.Marshal(ev)
	if err != nil {
		return err
	}
	if _, err := t.exec(f.st.insert, ev.Seq, ms(ev.At), data); err != nil {
		return err
	}
	j.dur.emitted(ev.Seq)
	if f.maxBacklog > 0 && ev.Seq > f.maxBacklog {
		n, err := t.execText(`DELETE FROM outbox WHERE seq <= ? AND sent = 0`, ev.Seq-f.maxBacklog)
		if err != nil {
			return err
		}
		if n > 0 {
			_, err = t.execText(`UPDATE meta SET value = CAST(value AS INTEGER) + ? WHERE key = 'outbox_dropped'`, n)
			return err
		}
	}
	return nil
}

func eventOrder(o Order) event.Order {
	return event.Order{MchOrderNo: o.MchOrderNo, Amount: o.Amount, Currency: o.Currency, Channel: o.Channel, State: o.State.String(),
		PayOrderID: o.PayOrderID, Status: o.Status, CodeMasked: o.CodeMasked, Source: o.Source, ECRRef: o.ECRRef,
		Refunded: o.Refunded, NotSent: o.NotSent, Message: clip(o.Message), CreatedAt: o.CreatedAt.UTC(), UpdatedAt: o.UpdatedAt.UTC()}
}

// clip keeps a message within the event contract's 512 bytes.
func clip(s string) string {
	if len(s) <= 512 {
		return s
	}
	s = s[:512]
	for !utf8.ValidString(s) {
		s = s[:len(s)-1]
	}
	return s
}

// SetFleet switches the outbox on for lane (or off, with lane ""), with at
// most maxBacklog unsent events kept. The setting lives in the journal, so
// every process writing to it (the daemon, scanpay refund, scanpay query)
// emits events alike. Switching it on from off queues a snapshot of the
// newest orders (up to half the backlog), so head office learns of orders
// written while the link was off.
func (j *Journal) SetFleet(ctx context.Context, lane string, maxBacklog int) error {
	if lane != "" && !event.ValidLane(lane) {
		return fmt.Errorf("fleet lane %q must be 1–12 letters, digits or _", lane)
	}
	if maxBacklog < 1 {
		return fmt.Errorf("fleet backlog %d must be positive", maxBacklog)
	}
	old := j.fleet.Load()
	// The snapshot below is emitted under the new setting.
	j.fleet.Store(&fleetSetting{lane: lane, maxBacklog: uint64(maxBacklog), st: old.st})
	err := j.write(ctx, "set fleet", func(t *wtx) error {
		var was string
		if err := t.rowText(`SELECT value FROM meta WHERE key = 'fleet_lane'`).Scan(&was); err != nil {
			return err
		}
		if _, err := t.execText(`UPDATE meta SET value = ? WHERE key = 'fleet_lane'`, lane); err != nil {
			return err
		}
		if _, err := t.execText(`UPDATE meta SET value = ? WHERE key = 'fleet_max_backlog'`, strconv.Itoa(maxBacklog)); err != nil {
			return err
		}
		if was != "" || lane == "" {
			return nil
		}
		// Read first: emitting runs statements of its own.
		var nos []string
		err := t.eachText(`SELECT mch_order_no FROM (SELECT mch_order_no, seq FROM orders
			ORDER BY seq DESC LIMIT ?) ORDER BY seq`, []any{max(maxBacklog/2, 1)}, func(vals []driver.Value) error {
			var no string
			if err := assign(&no, vals[0]); err != nil {
				return err
			}
			nos = append(nos, no)
			return nil
		})
		if err != nil {
			return err
		}
		for _, no := range nos {
			if err := j.emit(t, event.KindSnapshot, no, ""); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		j.fleet.Store(old)
	}
	return err
}

// Outbox is the publisher's view of the outbox, through a connection of its
// own: reading never blocks the lane's writes (WAL), and deleting sent
// events is not fsync'd (synchronous=NORMAL): if a power cut undoes a
// delete, the events are sent again and de-duplicated downstream.
type Outbox struct {
	db *sql.DB
	// holdFrom, when set, names the first event not yet durable (0: none,
	// Journal.UndurableFrom); Pending returns only the events before it.
	holdFrom func() uint64
}

// HoldUndurable makes Pending leave out the events from holdFrom() on
// (Journal.UndurableFrom, in the daemon that writes them). Call it before
// the publisher starts.
func (o *Outbox) HoldUndurable(holdFrom func() uint64) { o.holdFrom = holdFrom }

// Pending is one unsent event.
type Pending struct {
	Seq   uint64
	At    time.Time
	Event []byte // fleet/event JSON
}

// OutboxStats describes the backlog.
type OutboxStats struct {
	Backlog int64     // unsent events
	Oldest  time.Time // when the oldest unsent event was written (zero: none)
	Dropped int64     // events dropped because the backlog was full
	LastSeq uint64    // newest event's sequence number
	Lane    string    // "" while the fleet link is off
}

// OpenOutbox opens the outbox of the journal at path, which an Open (the
// daemon's) has already created or migrated.
func OpenOutbox(path string) (*Outbox, error) {
	db, err := sql.Open("sqlite", "file:"+path+"?_pragma=busy_timeout(5000)&_pragma=synchronous(NORMAL)&_txlock=immediate")
	if err != nil {
		return nil, fmt.Errorf("open outbox %s: %w", path, err)
	}
	db.SetMaxOpenConns(1)
	var n int
	if err := db.QueryRow(`SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = 'outbox'`).Scan(&n); err != nil || n == 0 {
		db.Close()
		if err == nil {
			err = errors.New("no outbox table (open the journal with this scanpay first)")
		}
		return nil, fmt.Errorf("open outbox %s: %w", path, err)
	}
	return &Outbox{db: db}, nil
}

// Close closes the connection.
func (o *Outbox) Close() error { return o.db.Close() }

// Pending returns up to limit unsent events after seq, oldest first.
func (o *Outbox) Pending(ctx context.Context, after uint64, limit int) ([]Pending, error) {
	rows, err := o.db.QueryContext(ctx, `SELECT seq, at, event FROM outbox WHERE seq > ? AND sent = 0 ORDER BY seq LIMIT ?`, after, limit)
	if err != nil {
		return nil, fmt.Errorf("outbox pending: %w", err)
	}
	defer rows.Close()
	var out []Pending
	for rows.Next() {
		var p Pending
		var at int64
		if err := rows.Scan(&p.Seq, &at, &p.Event); err != nil {
			return nil, fmt.Errorf("outbox pending: %w", err)
		}
		p.At = time.UnixMilli(at)
		out = append(out, p)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("outbox pending: %w", err)
	}
	// The hold is read after the rows: a row this read saw was committed
	// before it, and the hold for it was set before that commit (or
	// cleared since by an fsync that covered it).
	if o.holdFrom != nil {
		if h := o.holdFrom(); h > 0 {
			for i, p := range out {
				if p.Seq >= h {
					return out[:i], nil
				}
			}
		}
	}
	return out, nil
}

// Ack marks every event up to seq sent (JetStream has them) and deletes
// them, except the newest row, which keeps the sequence going.
func (o *Outbox) Ack(ctx context.Context, seq uint64) error {
	tx, err := o.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("outbox ack %d: %w", seq, err)
	}
	defer tx.Rollback()
	if _, err := tx.Exec(`UPDATE outbox SET sent = 1 WHERE seq <= ? AND sent = 0`, seq); err != nil {
		return fmt.Errorf("outbox ack %d: %w", seq, err)
	}
	if _, err := tx.Exec(`DELETE FROM outbox WHERE seq <= ? AND seq < (SELECT MAX(seq) FROM outbox)`, seq); err != nil {
		return fmt.Errorf("outbox ack %d: %w", seq, err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("outbox ack %d: %w", seq, err)
	}
	return nil
}

// Stats reads the backlog's size and age.
func (o *Outbox) Stats(ctx context.Context) (OutboxStats, error) {
	var s OutboxStats
	var oldest sql.NullInt64
	err := o.db.QueryRowContext(ctx, `SELECT (SELECT COUNT(*) FROM outbox WHERE sent = 0), (SELECT MIN(at) FROM outbox WHERE sent = 0),
		(SELECT CAST(value AS INTEGER) FROM meta WHERE key = 'outbox_dropped'),
		(SELECT COALESCE(MAX(seq), 0) FROM outbox),
		(SELECT value FROM meta WHERE key = 'fleet_lane')`).Scan(&s.Backlog, &oldest, &s.Dropped, &s.LastSeq, &s.Lane)
	if err != nil {
		return s, fmt.Errorf("outbox stats: %w", err)
	}
	if oldest.Valid {
		s.Oldest = time.UnixMilli(oldest.Int64)
	}
	return s, nil
}
