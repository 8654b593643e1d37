package hq

import (
	"context"
	"encoding/json"

	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/scanpay/scanpay/fleet/event"
)

// migrations are the head-office schema's versions, applied in order, each
// once, in one transaction under an advisory lock (two head offices
// starting together do not race). Never edit a released one: add another.
var migrations = []string{
	// 1: lanes, events (the de-duplication key and audit trail), orders and
	// refunds as the lanes' journals have them.
	`CREATE TABLE lanes (
		lane           text PRIMARY KEY,
		first_seen     timestamptz NOT NULL DEFAULT now(),
		last_event_at  timestamptz,
		last_seq       bigint NOT NULL DEFAULT 0,
		last_heartbeat timestamptz,
		version        text NOT NULL DEFAULT '',
		state          text NOT NULL DEFAULT '',
		devices        jsonb NOT NULL DEFAULT '{}',
		backlog        bigint NOT NULL DEFAULT 0,
		oldest_unsent  timestamptz,
		dropped        bigint NOT NULL DEFAULT 0
	);
	CREATE TABLE events (
		lane          text NOT NULL,
		seq           bigint NOT NULL,
		kind          text NOT NULL,
		mch_order_no  text NOT NULL,
		mch_refund_no text NOT NULL DEFAULT '',
		state         text NOT NULL,
		at            timestamptz NOT NULL,
		received_at   timestamptz NOT NULL DEFAULT now(),
		PRIMARY KEY (lane, seq)
	);
	CREATE TABLE orders (
		lane         text NOT NULL,
		mch_order_no text NOT NULL,
		last_seq     bigint NOT NULL,
		amount       bigint NOT NULL,
		currency     text NOT NULL,
		channel      text NOT NULL,
		state        text NOT NULL,
		pay_order_id text NOT NULL,
		status       integer NOT NULL,
		code_masked  text NOT NULL,
		source       text NOT NULL,
		ecr_ref      text NOT NULL,
		refunded     bigint NOT NULL,
		not_sent     boolean NOT NULL,
		message      text NOT NULL,
		created_at   timestamptz NOT NULL,
		updated_at   timestamptz NOT NULL,
		PRIMARY KEY (lane, mch_order_no)
	);
	CREATE INDEX orders_created ON orders (created_at);
	CREATE INDEX orders_open ON orders (state) WHERE state IN ('ARMED', 'SUBMITTING', 'POLLING', 'UNCONFIRMED', 'LATE_PAID');
	CREATE TABLE refunds (
		lane          text NOT NULL,
		mch_refund_no text NOT NULL,
		mch_order_no  text NOT NULL,
		last_seq      bigint NOT NULL,
		amount        bigint NOT NULL,
		state         text NOT NULL,
		message       text NOT NULL,
		created_at    timestamptz NOT NULL,
		updated_at    timestamptz NOT NULL,
		PRIMARY KEY (lane, mch_refund_no)
	);
	CREATE INDEX refunds_open ON refunds (state) WHERE state IN ('SENT', 'UNKNOWN');`,
}

// SchemaVersion is the newest schema this head office writes.
func SchemaVersion() int { return len(migrations) }

// Store is head office's PostgreSQL database.
type Store struct {
	pool *pgxpool.Pool
}

// OpenStore connects to PostgreSQL (a libpq connection string or URL) and
// brings the schema up to date.
func OpenStore(ctx context.Context, dsn string) (*Store, error) {
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("postgres: %w", err)
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("postgres: %w", err)
	}
	s := &Store{pool: pool}
	if err := s.migrate(ctx); err != nil {
		pool.Close()
		return nil, err
	}
	return s, nil
}

// Close closes the connections.
func (s *Store) Close() { s.pool.Close() }

func (s *Store) migrate(ctx context.Context) error {
	return pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock(7235001)`); err != nil {
			return fmt.Errorf("postgres: %w", err)
		}
		if _, err := tx.Exec(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
			version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())`); err != nil {
			return fmt.Errorf("postgres: schema_migrations: %w", err)
		}
		var have int
		if err := tx.QueryRow(ctx, `SELECT COALESCE(MAX(version), 0) FROM schema_migrations`).Scan(&have); err != nil {
			return fmt.Errorf("postgres: schema version: %w", err)
		}
		if have > len(migrations) {
			return fmt.Errorf("postgres: the database has schema version %d, newer than this scanpay (%d): upgrade scanpay hq", have, len(migrations))
		}
		for v := have + 1; v <= len(migrations); v++ {
			if _, err := tx.Exec(ctx, migrations[v-1]); err != nil {
				return fmt.Errorf("postgres: migration %d: %w", v, err)
			}
			if _, err := tx.Exec(ctx, `INSERT INTO schema_migrations(version) VALUES ($1)`, v); err != nil {
				return fmt.Errorf("postgres: migration %d: %w", v, err)
			}
		}
		return nil
	})
}

// Version returns the database's schema version.
func (s *Store) Version(ctx context.Context) (int, error) {
	var v int
	err := s.pool.QueryRow(ctx, `SELECT COALESCE(MAX(version), 0) FROM schema_migrations`).Scan(&v)
	return v, err
}

// Apply writes a batch of events in one transaction and returns how many
// were new. It is idempotent on (lane, seq), and each order or refund only
// moves to the state of an event newer (a higher seq) than the one it
// has, so a redelivered, duplicated or reordered event changes nothing.
func (s *Store) Apply(ctx context.Context, evs []event.Event) (int, error) {
	if len(evs) == 0 {
		return 0, nil
	}
	fresh := 0
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		b := &pgx.Batch{}
		type laneTop struct {
			seq uint64
			at  time.Time
		}
		lanes := map[string]laneTop{}
		for _, e := range evs {
			o := e.Order
			refundNo, state := "", o.State
			if e.Refund != nil {
				refundNo, state = e.Refund.MchRefundNo, e.Refund.State
			}
			b.Queue(`INSERT INTO events(lane, seq, kind, mch_order_no, mch_refund_no, state, at) VALUES ($1,$2,$3,$4,$5,$6,$7)
				ON CONFLICT (lane, seq) DO NOTHING`, e.Lane, int64(e.Seq), e.Kind, o.MchOrderNo, refundNo, state, e.At)
			b.Queue(`INSERT INTO orders(lane, mch_order_no, last_seq, amount, currency, channel, state, pay_order_id, status,
					code_masked, source, ecr_ref, refunded, not_sent, message, created_at, updated_at)
				VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14,$15,$16,$17)
				ON CONFLICT (lane, mch_order_no) DO UPDATE SET last_seq = EXCLUDED.last_seq, amount = EXCLUDED.amount,
					currency = EXCLUDED.currency, channel = EXCLUDED.channel, state = EXCLUDED.state,
					pay_order_id = EXCLUDED.pay_order_id, status = EXCLUDED.status, code_masked = EXCLUDED.code_masked,
					source = EXCLUDED.source, ecr_ref = EXCLUDED.ecr_ref, refunded = EXCLUDED.refunded,
					not_sent = EXCLUDED.not_sent, message = EXCLUDED.message, created_at = EXCLUDED.created_at,
					updated_at = EXCLUDED.updated_at
				WHERE orders.last_seq < EXCLUDED.last_seq`,
				e.Lane, o.MchOrderNo, int64(e.Seq), o.Amount, o.Currency, o.Channel, o.State, o.PayOrderID, o.Status,
				o.CodeMasked, o.Source, o.ECRRef, o.Refunded, o.NotSent, o.Message, o.CreatedAt, o.UpdatedAt)
			if r := e.Refund; r != nil {
				b.Queue(`INSERT INTO refunds(lane, mch_refund_no, mch_order_no, last_seq, amount, state, message, created_at, updated_at)
					VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9)
					ON CONFLICT (lane, mch_refund_no) DO UPDATE SET last_seq = EXCLUDED.last_seq, amount = EXCLUDED.amount,
						state = EXCLUDED.state, message = EXCLUDED.message, updated_at = EXCLUDED.updated_at
					WHERE refunds.last_seq < EXCLUDED.last_seq`,
					e.Lane, r.MchRefundNo, o.MchOrderNo, int64(e.Seq), r.Amount, r.State, r.Message, r.CreatedAt, r.UpdatedAt)
			}
			if top := lanes[e.Lane]; e.Seq > top.seq {
				lanes[e.Lane] = laneTop{e.Seq, e.At}
			}
		}
		for lane, top := range lanes {
			b.Queue(`INSERT INTO lanes(lane, last_seq, last_event_at) VALUES ($1, $2, $3)
				ON CONFLICT (lane) DO UPDATE SET last_seq = EXCLUDED.last_seq, last_event_at = EXCLUDED.last_event_at
				WHERE lanes.last_seq < EXCLUDED.last_seq`, lane, int64(top.seq), top.at)
		}
		br := tx.SendBatch(ctx, b)
		for _, e := range evs {
			tag, err := br.Exec()
			if err != nil {
				br.Close()
				return fmt.Errorf("postgres: event %s: %w", event.MsgID(e.Lane, e.Seq), err)
			}
			fresh += int(tag.RowsAffected())
			n := 1
			if e.Refund != nil {
				n = 2
			}
			for range n {
				if _, err := br.Exec(); err != nil {
					br.Close()
					return fmt.Errorf("postgres: event %s: %w", event.MsgID(e.Lane, e.Seq), err)
				}
			}
		}
		for range lanes {
			if _, err := br.Exec(); err != nil {
				br.Close()
				return fmt.Errorf("postgres: lanes: %w", err)
			}
		}
		return br.Close()
	})
	if err != nil {
		return 0, err
	}
	return fresh, nil
}

// Heartbeat records a lane's heartbeat unless a newer one is already there.
func (s *Store) Heartbeat(ctx context.Context, h event.Heartbeat) error {
	devices, err := json.Marshal(h.Devices)
	if err != nil {
		return err
	}
	_, err = s.pool.Exec(ctx, `INSERT INTO lanes(lane, last_heartbeat, version, state, devices, backlog, oldest_unsent, dropped)
		VALUES ($1,$2,$3,$4,$5,$6,$7,$8)
		ON CONFLICT (lane) DO UPDATE SET last_heartbeat = EXCLUDED.last_heartbeat, version = EXCLUDED.version,
			state = EXCLUDED.state, devices = EXCLUDED.devices, backlog = EXCLUDED.backlog,
			oldest_unsent = EXCLUDED.oldest_unsent, dropped = EXCLUDED.dropped
		WHERE lanes.last_heartbeat IS NULL OR lanes.last_heartbeat < EXCLUDED.last_heartbeat`,
		h.Lane, h.At, h.Version, h.State, devices, h.Backlog, h.Oldest, h.Dropped)
	if err != nil {
		return fmt.Errorf("postgres: heartbeat: %w", err)
	}
	return nil
}

// Total is one line of the fleet report.
type Total struct {
	Day      string `json:"day"`
	Lane     string `json:"lane"`
	Channel  string `json:"channel"`
	Outcome  string `json:"outcome"`
	Currency string `json:"currency"`
	Count    int64  `json:"count"`
	Amount   int64  `json:"amount"`
	Refunded int64  `json:"refunded"`
}

// Totals sums orders created in [from, to) per day (in time zone tz, an
// IANA name), lane, channel, outcome and currency. Like a lane's report it
// leaves out amounts that never became a payment (ARMED, CANCELLED).
func (s *Store) Totals(ctx context.Context, from, to time.Time, tz string) ([]Total, error) {
	rows, err := s.pool.Query(ctx, `SELECT to_char(created_at AT TIME ZONE $3, 'YYYY-MM-DD'), lane, channel, state, currency,
			COUNT(*), SUM(amount)::bigint, SUM(refunded)::bigint
		FROM orders WHERE created_at >= $1 AND created_at < $2 AND state NOT IN ('ARMED', 'CANCELLED')
		GROUP BY 1, 2, 3, 4, 5 ORDER BY 1, 2, 3, 4, 5`, from, to, tz)
	if err != nil {
		return nil, fmt.Errorf("postgres: report: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Total, error) {
		var t Total
		err := r.Scan(&t.Day, &t.Lane, &t.Channel, &t.Outcome, &t.Currency, &t.Count, &t.Amount, &t.Refunded)
		return t, err
	})
	if err != nil {
		return nil, fmt.Errorf("postgres: report: %w", err)
	}
	return out, nil
}

// OpenItem is one thing across the fleet that needs a person: an order not
// settled, a late payment not refunded, or a refund whose fate is unknown.
type OpenItem struct {
	Lane        string    `json:"lane"`
	What        string    `json:"what"` // UNCONFIRMED, LATE_PAID, … or REFUND_UNKNOWN, REFUND_SENT
	MchOrderNo  string    `json:"mchOrderNo"`
	MchRefundNo string    `json:"mchRefundNo,omitempty"`
	Amount      int64     `json:"amount"`
	Refunded    int64     `json:"refunded"`
	Currency    string    `json:"currency"`
	Channel     string    `json:"channel"`
	PayOrderID  string    `json:"payOrderId"`
	CreatedAt   time.Time `json:"createdAt"`
	Message     string    `json:"message"`
}

// Open lists unsettled orders, late payments not fully refunded and refunds
// not finished, oldest first.
func (s *Store) Open(ctx context.Context) ([]OpenItem, error) {
	rows, err := s.pool.Query(ctx, `
		SELECT lane, state, mch_order_no, '', amount, refunded, currency, channel, pay_order_id, created_at, message FROM orders
		WHERE state IN ('ARMED', 'SUBMITTING', 'POLLING', 'UNCONFIRMED') OR (state = 'LATE_PAID' AND refunded < amount)
		UNION ALL
		SELECT r.lane, 'REFUND_' || r.state, r.mch_order_no, r.mch_refund_no, r.amount, 0, o.currency, o.channel, o.pay_order_id,
			r.created_at, r.message
		FROM refunds r JOIN orders o ON o.lane = r.lane AND o.mch_order_no = r.mch_order_no
		WHERE r.state IN ('SENT', 'UNKNOWN')
		ORDER BY 10, 1, 3`)
	if err != nil {
		return nil, fmt.Errorf("postgres: open orders: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (OpenItem, error) {
		var i OpenItem
		err := r.Scan(&i.Lane, &i.What, &i.MchOrderNo, &i.MchRefundNo, &i.Amount, &i.Refunded, &i.Currency, &i.Channel,
			&i.PayOrderID, &i.CreatedAt, &i.Message)
		return i, err
	})
	if err != nil {
		return nil, fmt.Errorf("postgres: open orders: %w", err)
	}
	return out, nil
}

// Lane is what head office knows about one lane.
type Lane struct {
	Lane          string          `json:"lane"`
	LastEventAt   *time.Time      `json:"lastEventAt"`
	LastSeq       int64           `json:"lastSeq"`
	LastHeartbeat *time.Time      `json:"lastHeartbeat"`
	Version       string          `json:"version"`
	State         string          `json:"state"`
	Devices       map[string]bool `json:"devices"`
	Backlog       int64           `json:"backlog"`
	OldestUnsent  *time.Time      `json:"oldestUnsent"`
	Dropped       int64           `json:"dropped"`
	Silent        bool            `json:"silent"`
}

// Lanes lists every lane; silent ones have sent no heartbeat for silentAfter.
func (s *Store) Lanes(ctx context.Context, now time.Time, silentAfter time.Duration) ([]Lane, error) {
	rows, err := s.pool.Query(ctx, `SELECT lane, last_event_at, last_seq, last_heartbeat, version, state, devices, backlog,
		oldest_unsent, dropped FROM lanes ORDER BY lane`)
	if err != nil {
		return nil, fmt.Errorf("postgres: lanes: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Lane, error) {
		var l Lane
		var devices []byte
		err := r.Scan(&l.Lane, &l.LastEventAt, &l.LastSeq, &l.LastHeartbeat, &l.Version, &l.State, &devices, &l.Backlog,
			&l.OldestUnsent, &l.Dropped)
		if err == nil {
			err = json.Unmarshal(devices, &l.Devices)
		}
		l.Silent = l.LastHeartbeat == nil || now.Sub(*l.LastHeartbeat) > silentAfter
		return l, err
	})
	if err != nil {
		return nil, fmt.Errorf("postgres: lanes: %w", err)
	}
	return out, nil
}

// Order is one order as head office has it (tests compare it with lanes).
type Order struct {
	Lane       string
	MchOrderNo string
	LastSeq    int64
	Amount     int64
	Currency   string
	Channel    string
	State      string
	PayOrderID string
	Refunded   int64
	CodeMasked string
}

// Orders returns every order of a lane.
func (s *Store) Orders(ctx context.Context, lane string) ([]Order, error) {
	rows, err := s.pool.Query(ctx, `SELECT lane, mch_order_no, last_seq, amount, currency, channel, state, pay_order_id, refunded, code_masked
		FROM orders WHERE lane = $1 ORDER BY mch_order_no`, lane)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, pgx.RowToStructByPos[Order])
}

// Refund is one refund as head office has it.
type Refund struct {
	Lane        string
	MchRefundNo string
	MchOrderNo  string
	Amount      int64
	State       string
}

// Refunds returns every refund of a lane.
func (s *Store) Refunds(ctx context.Context, lane string) ([]Refund, error) {
	rows, err := s.pool.Query(ctx, `SELECT lane, mch_refund_no, mch_order_no, amount, state FROM refunds WHERE lane = $1 ORDER BY mch_refund_no`, lane)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, pgx.RowToStructByPos[Refund])
}

// EventCount counts stored events (of one lane, or all with "").
func (s *Store) EventCount(ctx context.Context, lane string) (int64, error) {
	var n int64
	err := s.pool.QueryRow(ctx, `SELECT COUNT(*) FROM events WHERE $1 = '' OR lane = $1`, lane).Scan(&n)
	return n, err
}

// Ping checks the database answers.
func (s *Store) Ping(ctx context.Context) error {
	if err := s.pool.Ping(ctx); err != nil {
		return fmt.Errorf("postgres: %w", err)
	}
	return nil
}
