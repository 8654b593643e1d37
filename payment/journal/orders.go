package journal

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"
)

// Order is one journaled order.
type Order struct {
	MchOrderNo string
	Seq        uint64 // the journal's order counter: newest is highest, whatever the clock said
	TerminalID string
	Amount     int64 // cents
	Currency   string
	Channel    string
	CodeMasked string
	CodeHash   string
	Source     string // keypad, ecr, demo, …
	ECRRef     string
	POSNumber  string
	ECRType    string // the register's transaction type ("0", "4"); empty for other sources
	State      State
	PayOrderID string
	Status     int    // last gateway status, -1 when none
	Message    string // last short, cashier-safe message
	NotSent    bool   // create_order provably never left the machine
	Refunded   int64  // cents refunded (accepted refunds)
	CreatedAt  time.Time
	UpdatedAt  time.Time
}

// NewOrder is what AddOrder needs; the journal assigns the number and state.
type NewOrder struct {
	TerminalID string
	Amount     int64
	Currency   string
	Channel    string
	CodeMasked string
	CodeHash   string
	Source     string
	ECRRef     string
	POSNumber  string
	ECRType    string
}

// Update carries the gateway facts recorded with a transition.
type Update struct {
	PayOrderID string // kept when empty
	Status     int    // kept when negative
	Message    string
	NotSent    bool
}

const orderCols = `mch_order_no, seq, terminal_id, amount, currency, channel, code_masked, code_hash, source,
	ecr_ref, pos_number, ecr_type, state, pay_order_id, status, message, not_sent, refunded, created_at, updated_at`

type scanner interface{ Scan(...any) error }

func scanOrder(s scanner) (Order, error) {
	var o Order
	var state string
	var created, updated int64
	var notSent int
	err := s.Scan(&o.MchOrderNo, &o.Seq, &o.TerminalID, &o.Amount, &o.Currency, &o.Channel, &o.CodeMasked, &o.CodeHash,
		&o.Source, &o.ECRRef, &o.POSNumber, &o.ECRType, &state, &o.PayOrderID, &o.Status, &o.Message, &notSent, &o.Refunded, &created, &updated)
	if err != nil {
		return o, err
	}
	if o.State, err = ParseState(state); err != nil {
		return o, err
	}
	o.NotSent = notSent != 0
	o.CreatedAt = time.UnixMilli(created)
	o.UpdatedAt = time.UnixMilli(updated)
	return o, nil
}

// AddOrder commits a new order in state SUBMITTING, with its number built
// by number from the journal's persisted counter, in one transaction. It
// returns ErrCodeUsed when the code hash is already in the journal.
func (j *Journal) AddOrder(ctx context.Context, n NewOrder, number func(counter uint64) string) (Order, error) {
	now := j.now()
	var o Order
	err := j.write(ctx, "add order", func(tx *sql.Tx) error {
		var exists int
		if err := tx.QueryRow(`SELECT COUNT(*) FROM orders WHERE code_hash = ?`, n.CodeHash).Scan(&exists); err != nil {
			return err
		}
		if exists > 0 {
			return ErrCodeUsed
		}
		counter, err := nextCounter(tx, "order_counter")
		if err != nil {
			return err
		}
		o = Order{
			MchOrderNo: number(counter), Seq: counter, TerminalID: n.TerminalID, Amount: n.Amount, Currency: n.Currency,
			Channel: n.Channel, CodeMasked: n.CodeMasked, CodeHash: n.CodeHash, Source: n.Source,
			ECRRef: n.ECRRef, POSNumber: n.POSNumber, ECRType: n.ECRType, State: StateSubmitting, Status: -1,
			CreatedAt: time.UnixMilli(ms(now)), UpdatedAt: time.UnixMilli(ms(now)),
		}
		if _, err := tx.Exec(`INSERT INTO orders(`+orderCols+`) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)`,
			o.MchOrderNo, o.Seq, o.TerminalID, o.Amount, o.Currency, o.Channel, o.CodeMasked, o.CodeHash, o.Source,
			o.ECRRef, o.POSNumber, o.ECRType, o.State.String(), "", -1, "", 0, 0, ms(now), ms(now)); err != nil {
			return err
		}
		_, err = tx.Exec(`INSERT INTO transitions(mch_order_no, at, from_state, to_state, detail) VALUES (?,?,?,?,?)`,
			o.MchOrderNo, ms(now), "", o.State.String(), fmt.Sprintf("%s %d %s %s", o.Channel, o.Amount, o.Currency, o.CodeMasked))
		return err
	})
	return o, err
}

// CodeUsed reports whether a code hash is already in the journal.
func (j *Journal) CodeUsed(ctx context.Context, hash string) (bool, error) {
	var n int
	if err := j.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM orders WHERE code_hash = ?`, hash).Scan(&n); err != nil {
		return false, storage("code lookup", err)
	}
	return n > 0, nil
}

// Transition moves an order from one state to another and records the
// move, in one transaction. ErrStateChanged means the order is no longer
// in from (another process moved it); ErrInvalidTransition means the move
// is not allowed. from == to records gateway facts without a state change.
func (j *Journal) Transition(ctx context.Context, no string, from, to State, u Update) (Order, error) {
	if from != to && !CanMove(from, to) {
		return Order{}, fmt.Errorf("%w: %s → %s", ErrInvalidTransition, from, to)
	}
	now := j.now()
	var o Order
	err := j.write(ctx, "transition", func(tx *sql.Tx) error {
		cur, err := scanOrder(tx.QueryRow(`SELECT `+orderCols+` FROM orders WHERE mch_order_no = ?`, no))
		if errors.Is(err, sql.ErrNoRows) {
			return ErrNotFound
		}
		if err != nil {
			return err
		}
		if cur.State != from {
			return fmt.Errorf("%w: %s is %s, not %s", ErrStateChanged, no, cur.State, from)
		}
		o = cur
		o.State = to
		if u.PayOrderID != "" {
			o.PayOrderID = u.PayOrderID
		}
		if u.Status >= 0 {
			o.Status = u.Status
		}
		o.Message = u.Message
		o.NotSent = o.NotSent || u.NotSent
		o.UpdatedAt = time.UnixMilli(ms(now))
		notSent := 0
		if o.NotSent {
			notSent = 1
		}
		if _, err := tx.Exec(`UPDATE orders SET state=?, pay_order_id=?, status=?, message=?, not_sent=?, updated_at=? WHERE mch_order_no=?`,
			to.String(), o.PayOrderID, o.Status, o.Message, notSent, ms(now), no); err != nil {
			return err
		}
		_, err = tx.Exec(`INSERT INTO transitions(mch_order_no, at, from_state, to_state, status, detail) VALUES (?,?,?,?,?,?)`,
			no, ms(now), from.String(), to.String(), o.Status, u.Message)
		return err
	})
	return o, err
}

// Get returns one order.
func (j *Journal) Get(ctx context.Context, no string) (Order, error) {
	o, err := scanOrder(j.db.QueryRowContext(ctx, `SELECT `+orderCols+` FROM orders WHERE mch_order_no = ?`, no))
	if errors.Is(err, sql.ErrNoRows) {
		return Order{}, fmt.Errorf("%w: %s", ErrNotFound, no)
	}
	if err != nil {
		return Order{}, storage("get order", err)
	}
	return o, nil
}

// Find returns the order with this mchOrderNo or payOrderId.
func (j *Journal) Find(ctx context.Context, id string) (Order, error) {
	o, err := scanOrder(j.db.QueryRowContext(ctx, `SELECT `+orderCols+` FROM orders WHERE mch_order_no = ? OR (pay_order_id = ? AND pay_order_id <> '') LIMIT 1`, id, id))
	if errors.Is(err, sql.ErrNoRows) {
		return Order{}, fmt.Errorf("%w: %s", ErrNotFound, id)
	}
	if err != nil {
		return Order{}, storage("find order", err)
	}
	return o, nil
}

// Filter selects orders. Zero values select everything.
type Filter struct {
	States []State
	From   time.Time // created at or after
	To     time.Time // created before
	Limit  int
}

// Orders lists orders matching f, oldest first.
func (j *Journal) Orders(ctx context.Context, f Filter) ([]Order, error) {
	var where []string
	var args []any
	if len(f.States) > 0 {
		ph := make([]string, len(f.States))
		for i, s := range f.States {
			ph[i] = "?"
			args = append(args, s.String())
		}
		where = append(where, "state IN ("+strings.Join(ph, ",")+")")
	}
	if !f.From.IsZero() {
		where = append(where, "created_at >= ?")
		args = append(args, ms(f.From))
	}
	if !f.To.IsZero() {
		where = append(where, "created_at < ?")
		args = append(args, ms(f.To))
	}
	q := `SELECT ` + orderCols + ` FROM orders`
	if len(where) > 0 {
		q += " WHERE " + strings.Join(where, " AND ")
	}
	q += " ORDER BY created_at, mch_order_no"
	if f.Limit > 0 {
		q += fmt.Sprintf(" LIMIT %d", f.Limit)
	}
	return j.queryOrders(ctx, q, args...)
}

func (j *Journal) queryOrders(ctx context.Context, q string, args ...any) ([]Order, error) {
	rows, err := j.db.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, storage("list orders", err)
	}
	defer rows.Close()
	var out []Order
	for rows.Next() {
		o, err := scanOrder(rows)
		if err != nil {
			return nil, storage("list orders", err)
		}
		out = append(out, o)
	}
	if err := rows.Err(); err != nil {
		return nil, storage("list orders", err)
	}
	return out, nil
}

// OpenOrders lists orders whose outcome is not settled (SUBMITTING,
// POLLING, UNCONFIRMED) and late payments not yet fully refunded.
func (j *Journal) OpenOrders(ctx context.Context) ([]Order, error) {
	return j.queryOrders(ctx, `SELECT `+orderCols+` FROM orders
		WHERE state IN ('SUBMITTING','POLLING','UNCONFIRMED') OR (state = 'LATE_PAID' AND refunded < amount)
		ORDER BY seq`)
}

// LastByRef returns the newest order with this ECR reference. Newest is
// the highest journal sequence: a clock that jumped cannot reorder sales.
func (j *Journal) LastByRef(ctx context.Context, ref string) (Order, error) {
	o, err := scanOrder(j.db.QueryRowContext(ctx, `SELECT `+orderCols+` FROM orders WHERE ecr_ref = ? ORDER BY seq DESC LIMIT 1`, ref))
	if errors.Is(err, sql.ErrNoRows) {
		return Order{}, fmt.Errorf("%w: reference %q", ErrNotFound, ref)
	}
	if err != nil {
		return Order{}, storage("order by reference", err)
	}
	return o, nil
}

// LastPaid returns the newest paid order, by journal sequence.
func (j *Journal) LastPaid(ctx context.Context) (Order, error) {
	o, err := scanOrder(j.db.QueryRowContext(ctx, `SELECT `+orderCols+` FROM orders WHERE state = 'PAID' ORDER BY seq DESC LIMIT 1`))
	if errors.Is(err, sql.ErrNoRows) {
		return Order{}, fmt.Errorf("%w: no paid order", ErrNotFound)
	}
	if err != nil {
		return Order{}, storage("last paid order", err)
	}
	return o, nil
}

// Transition records one move in an order's history.
type TransitionRecord struct {
	At     time.Time
	From   string
	To     string
	Status int
	Detail string
}

// History returns an order's transitions, oldest first.
func (j *Journal) History(ctx context.Context, no string) ([]TransitionRecord, error) {
	rows, err := j.db.QueryContext(ctx, `SELECT at, from_state, to_state, status, detail FROM transitions WHERE mch_order_no = ? ORDER BY id`, no)
	if err != nil {
		return nil, storage("history", err)
	}
	defer rows.Close()
	var out []TransitionRecord
	for rows.Next() {
		var r TransitionRecord
		var at int64
		if err := rows.Scan(&at, &r.From, &r.To, &r.Status, &r.Detail); err != nil {
			return nil, storage("history", err)
		}
		r.At = time.UnixMilli(at)
		out = append(out, r)
	}
	return out, rows.Err()
}

// Total is one line of the daily report.
type Total struct {
	Day      string // YYYY-MM-DD in the report's time zone
	Channel  string
	State    State
	Count    int
	Amount   int64
	Refunded int64
	Currency string
}

// DailyTotals sums orders created in [from, to) per local day, channel,
// state and currency.
func (j *Journal) DailyTotals(ctx context.Context, from, to time.Time, loc *time.Location) ([]Total, error) {
	orders, err := j.Orders(ctx, Filter{From: from, To: to})
	if err != nil {
		return nil, err
	}
	type key struct {
		day, channel, currency string
		state                  State
	}
	sums := map[key]*Total{}
	for _, o := range orders {
		k := key{o.CreatedAt.In(loc).Format("2006-01-02"), o.Channel, o.Currency, o.State}
		t := sums[k]
		if t == nil {
			t = &Total{Day: k.day, Channel: k.channel, State: k.state, Currency: k.currency}
			sums[k] = t
		}
		t.Count++
		t.Amount += o.Amount
		t.Refunded += o.Refunded
	}
	out := make([]Total, 0, len(sums))
	for _, t := range sums {
		out = append(out, *t)
	}
	sort.Slice(out, func(a, b int) bool {
		x, y := out[a], out[b]
		if x.Day != y.Day {
			return x.Day < y.Day
		}
		if x.Channel != y.Channel {
			return x.Channel < y.Channel
		}
		if x.State != y.State {
			return x.State < y.State
		}
		return x.Currency < y.Currency
	})
	return out, nil
}
