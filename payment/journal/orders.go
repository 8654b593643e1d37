package journal

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/scanpay/scanpay/fleet/event"
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
	// Taken: the register took this sale's final result (MarkTaken), so
	// the same request again is a new sale, never this one's answer.
	Taken bool
	// Interrupted: a restart found the order open and the lane could not
	// settle it: its outcome may have been shown before it was on disk,
	// so a late payment of it is held for the operator, not refunded.
	Interrupted bool
	CreatedAt   time.Time
	UpdatedAt   time.Time
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
	// Interrupted: recovery hands the order on unsettled (kept once set).
	Interrupted bool
}

const orderCols = `mch_order_no, seq, terminal_id, amount, currency, channel, code_masked, code_hash, source,
	ecr_ref, pos_number, ecr_type, state, pay_order_id, status, message, not_sent, refunded, created_at, updated_at, ecr_taken, interrupted`

type scanner interface{ Scan(...any) error }

func scanOrder(s scanner) (Order, error) {
	if w, ok := s.(*wrow); ok {
		// A write's row: its values are read as they are, where Scan's
		// destinations, passed as interfaces, would each be allocated.
		if w.err != nil {
			return Order{}, w.err
		}
		return orderFromValues(w.vals)
	}
	return scanOrderRow(s)
}

// orderFromValues is scanOrder for a row of orderCols as the driver gives
// it, with the conversions Scan makes.
func orderFromValues(v []driver.Value) (o Order, err error) {
	if len(v) != orderColCount {
		return o, fmt.Errorf("journal: %d columns for an order, want %d", len(v), orderColCount)
	}
	str := func(i int, dst *string) {
		if err == nil {
			if err = assign(dst, v[i]); err != nil {
				err = fmt.Errorf("journal: order column %d: %w", i+1, err)
			}
		}
	}
	num := func(i int) int64 {
		n, ierr := integer(v[i])
		if ierr != nil && err == nil {
			err = fmt.Errorf("journal: order column %d: %w", i+1, ierr)
		}
		return n
	}
	var state string
	str(0, &o.MchOrderNo)
	seq := num(1)
	str(2, &o.TerminalID)
	o.Amount = num(3)
	str(4, &o.Currency)
	str(5, &o.Channel)
	str(6, &o.CodeMasked)
	if v[7] != nil { // NULL until a code is attached
		str(7, &o.CodeHash)
	}
	str(8, &o.Source)
	str(9, &o.ECRRef)
	str(10, &o.POSNumber)
	str(11, &o.ECRType)
	str(12, &state)
	str(13, &o.PayOrderID)
	status := num(14)
	if int64(int(status)) != status && err == nil {
		err = fmt.Errorf("journal: order status %d out of range", status)
	}
	o.Status = int(status)
	str(15, &o.Message)
	o.NotSent = num(16) != 0
	o.Refunded = num(17)
	created, updated := num(18), num(19)
	o.Taken, o.Interrupted = num(20) != 0, num(21) != 0
	if err != nil {
		return Order{}, err
	}
	if seq < 0 {
		return Order{}, fmt.Errorf("journal: order sequence %d", seq)
	}
	o.Seq = uint64(seq)
	if o.State, err = ParseState(state); err != nil {
		return Order{}, err
	}
	o.CreatedAt = time.UnixMilli(created)
	o.UpdatedAt = time.UnixMilli(updated)
	return o, nil
}

// orderColCount is how many columns orderCols names.
const orderColCount = 22

func scanOrderRow(s scanner) (Order, error) {
	var o Order
	var state string
	var created, updated int64
	var notSent, taken, interrupted int
	var hash sql.NullString
	err := s.Scan(&o.MchOrderNo, &o.Seq, &o.TerminalID, &o.Amount, &o.Currency, &o.Channel, &o.CodeMasked, &hash,
		&o.Source, &o.ECRRef, &o.POSNumber, &o.ECRType, &state, &o.PayOrderID, &o.Status, &o.Message, &notSent, &o.Refunded, &created, &updated, &taken, &interrupted)
	if err != nil {
		return o, err
	}
	if o.State, err = ParseState(state); err != nil {
		return o, err
	}
	o.NotSent = notSent != 0
	o.Taken, o.Interrupted = taken != 0, interrupted != 0
	o.CodeHash = hash.String
	o.CreatedAt = time.UnixMilli(created)
	o.UpdatedAt = time.UnixMilli(updated)
	return o, nil
}

// Armed is an order made when its amount is armed, before any code.
type Armed struct {
	TerminalID string
	Amount     int64
	Currency   string
	Source     string
	ECRRef     string
	POSNumber  string
	ECRType    string
}

// Code is a payment code's link to its order: what the journal keeps of
// it (never the code itself).
type Code struct {
	Channel    string
	CodeMasked string
	CodeHash   string
}

// ArmOrder commits a new order in state ARMED, with its number built by
// number from the next journal sequence, in one transaction: the order is
// durable before a code is scanned, so a scan sends create_order at once.
func (j *Journal) ArmOrder(ctx context.Context, a Armed, number func(seq uint64) string) (Order, error) {
	var o Order
	err := j.write(ctx, "arm order", func(t *wtx) error {
		var err error
		o, err = j.insertOrder(t, NewOrder{TerminalID: a.TerminalID, Amount: a.Amount, Currency: a.Currency,
			Source: a.Source, ECRRef: a.ECRRef, POSNumber: a.POSNumber, ECRType: a.ECRType}, StateArmed, number)
		return err
	})
	return o, err
}

// AttachCode records the code's link to an armed order and moves it to
// SUBMITTING, in one transaction. The engine calls it while create_order
// is in flight. ErrCodeUsed means the code's hash is already in the
// journal (another order took the code meanwhile).
//
// Its commit is not fsync'd (writeUnsynced), and neither is the sale's
// outcome (Settle), which comes after it in the WAL: the next synced
// commit (the register's taken mark, the next sale's arm, or Sync) makes
// both durable, this one first. Until then a crash of the process loses
// nothing, and a power cut leaves the order ARMED, which recovery asks the
// gateway about like any order that may have been sent: only the masked
// code and the wallet would be missing from its row.
func (j *Journal) AttachCode(ctx context.Context, no string, c Code) (Order, error) {
	// Into the filter before the write: once the hash can be on disk, no
	// check may answer "unused" from the filter (a write that fails only
	// costs later checks of this code a read).
	j.filterCode(c.CodeHash)
	var o Order
	err := j.writeUnsynced(ctx, "attach code", func(t *wtx) error {
		now := ms(j.now())
		var err error
		o, err = scanOrder(t.row(j.st.attachArmed, c.Channel, c.CodeMasked, c.CodeHash, now, no))
		if uniqueViolation(err) {
			// code_hash is the one unique column this statement sets.
			return ErrCodeUsed
		}
		if errors.Is(err, sql.ErrNoRows) {
			return j.notIn(t, no, StateArmed)
		}
		if err != nil {
			return err
		}
		if err := j.logTransition(t, o.Seq, now, StateArmed.String(), StateSubmitting.String(), -1,
			fmt.Sprintf("%s %d %s %s", o.Channel, o.Amount, o.Currency, o.CodeMasked)); err != nil {
			return err
		}
		return j.emit(t, event.KindOrder, no, "")
	})
	return o, err
}

// filterCode adds a hash about to be written to the code filter.
func (j *Journal) filterCode(hash string) {
	if j.codes != nil && hash != "" {
		j.codes.add(hash)
	}
}

// notIn is the error for an order that a guarded update did not find in
// state want: gone (ErrNotFound) or moved on (ErrStateChanged).
func (j *Journal) notIn(t *wtx, no string, want State) error {
	cur, err := scanOrder(t.row(j.st.getOrder, no))
	if errors.Is(err, sql.ErrNoRows) {
		return fmt.Errorf("%w: %s", ErrNotFound, no)
	}
	if err != nil {
		return err
	}
	return fmt.Errorf("%w: %s is %s, not %s", ErrStateChanged, no, cur.State, want)
}

// uniqueViolation reports whether err is SQLite's UNIQUE constraint
// failure (SQLITE_CONSTRAINT_UNIQUE).
func uniqueViolation(err error) bool {
	var se interface{ Code() int }
	return errors.As(err, &se) && se.Code() == 2067
}

// AddOrder commits a new order with its code in state SUBMITTING, in one
// transaction (arming and attaching at once; tools and tests use it). It
// returns ErrCodeUsed when the code hash is already in the journal.
func (j *Journal) AddOrder(ctx context.Context, n NewOrder, number func(counter uint64) string) (Order, error) {
	j.filterCode(n.CodeHash)
	var o Order
	err := j.write(ctx, "add order", func(t *wtx) error {
		var used int
		if err := t.row(j.st.codeUsed, n.CodeHash).Scan(&used); err != nil {
			return err
		}
		if used > 0 {
			return ErrCodeUsed
		}
		var err error
		o, err = j.insertOrder(t, n, StateSubmitting, number)
		return err
	})
	return o, err
}

// insertOrder writes a new order and its first transition.
func (j *Journal) insertOrder(t *wtx, n NewOrder, state State, number func(uint64) string) (Order, error) {
	var seq uint64
	if err := t.row(j.st.nextOrderSeq).Scan(&seq); err != nil {
		return Order{}, err
	}
	now := ms(j.now())
	o := Order{
		MchOrderNo: number(seq), Seq: seq, TerminalID: n.TerminalID, Amount: n.Amount, Currency: n.Currency,
		Channel: n.Channel, CodeMasked: n.CodeMasked, CodeHash: n.CodeHash, Source: n.Source,
		ECRRef: n.ECRRef, POSNumber: n.POSNumber, ECRType: n.ECRType, State: state, Status: -1,
		CreatedAt: time.UnixMilli(now), UpdatedAt: time.UnixMilli(now),
	}
	var hash any
	if o.CodeHash != "" {
		hash = o.CodeHash
	}
	if _, err := t.exec(j.st.insertOrder, o.Seq, o.MchOrderNo, o.TerminalID, o.Amount, o.Currency,
		o.Channel, o.CodeMasked, hash, o.Source, o.ECRRef, o.POSNumber, o.ECRType, o.State.String(), now, now); err != nil {
		return Order{}, err
	}
	detail := fmt.Sprintf("%d %s", o.Amount, o.Currency)
	if o.Channel != "" {
		detail = fmt.Sprintf("%s %d %s %s", o.Channel, o.Amount, o.Currency, o.CodeMasked)
	}
	if err := j.logTransition(t, o.Seq, now, "", o.State.String(), -1, detail); err != nil {
		return Order{}, err
	}
	return o, j.emit(t, event.KindOrder, o.MchOrderNo, "")
}

// logTransition appends one step to an order's history.
func (j *Journal) logTransition(t *wtx, seq uint64, at int64, from, to string, status int, detail string) error {
	_, err := t.exec(j.st.insertTransition, seq, seq, at, from, to, status, detail)
	return err
}

// lookup is the context of a one-row read by index: it takes
// microseconds, so it is never worth interrupting, and the driver watches
// a cancellable context with a goroutine per statement.
func lookup(ctx context.Context) context.Context { return context.WithoutCancel(ctx) }

// CodeUsed reports whether a code hash is already in the journal. Most
// unused codes are answered by the code filter without a read.
func (j *Journal) CodeUsed(ctx context.Context, hash string) (bool, error) {
	if j.codes != nil && j.codes.surelyUnused(hash) {
		return false, nil
	}
	var n int
	if err := j.st.codeUsed.QueryRowContext(lookup(ctx), hash).Scan(&n); err != nil {
		return false, storage("code lookup", err)
	}
	return n > 0, nil
}

// Transition moves an order from one state to another and records the
// move, in one transaction. ErrStateChanged means the order is no longer
// in from (another process moved it); ErrInvalidTransition means the move
// is not allowed. from == to records gateway facts without a state change.
func (j *Journal) Transition(ctx context.Context, no string, from, to State, u Update) (Order, error) {
	return j.transition(ctx, no, from, to, u, j.write)
}

// Settle is Transition for the outcome of a sale the lane just showed and
// answered, committed without its own fsync (writeUnsynced): the gateway's
// answer decided the outcome, and a power cut before the next synced
// commit leaves the order open on disk, which recovery asks the gateway
// about again. The next synced commit (the register's "taken" mark, the
// next sale's arm, or Sync, which the lane calls soon after) makes it
// durable.
func (j *Journal) Settle(ctx context.Context, no string, from, to State, u Update) (Order, error) {
	return j.transition(ctx, no, from, to, u, j.writeUnsynced)
}

func (j *Journal) transition(ctx context.Context, no string, from, to State, u Update, write func(context.Context, string, func(*wtx) error) error) (Order, error) {
	if from != to && !CanMove(from, to) {
		return Order{}, fmt.Errorf("%w: %s → %s", ErrInvalidTransition, from, to)
	}
	var o Order
	err := write(ctx, "transition", func(t *wtx) error {
		now := ms(j.now())
		// The row as Apply(cur, to, u) makes it, in one guarded statement.
		var err error
		o, err = scanOrder(t.row(j.st.moveOrder, to.String(), u.PayOrderID, u.PayOrderID,
			u.Status, u.Status, u.Message, u.NotSent, u.Interrupted, now, no, from.String()))
		if errors.Is(err, sql.ErrNoRows) {
			return j.notIn(t, no, from)
		}
		if err != nil {
			return err
		}
		if err := j.logTransition(t, o.Seq, now, from.String(), to.String(), o.Status, u.Message); err != nil {
			return err
		}
		return j.emit(t, event.KindOrder, no, "")
	})
	return o, err
}

// Apply is order o after a move to state to with update u, as Transition
// records it; the engine uses it to announce a result before its commit.
func Apply(o Order, to State, u Update) Order {
	o.State = to
	if u.PayOrderID != "" {
		o.PayOrderID = u.PayOrderID
	}
	if u.Status >= 0 {
		o.Status = u.Status
	}
	o.Message = u.Message
	o.NotSent = o.NotSent || u.NotSent
	o.Interrupted = o.Interrupted || u.Interrupted
	return o
}

// Get returns one order.
func (j *Journal) Get(ctx context.Context, no string) (Order, error) {
	o, err := scanOrder(j.st.getOrder.QueryRowContext(lookup(ctx), no))
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
	o, err := scanOrder(j.st.getOrder.QueryRowContext(lookup(ctx), id))
	if errors.Is(err, sql.ErrNoRows) {
		o, err = scanOrder(j.st.getOrderByPay.QueryRowContext(lookup(ctx), id))
	}
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
		WHERE state IN ('ARMED','SUBMITTING','POLLING','UNCONFIRMED') OR (state = 'LATE_PAID' AND refunded < amount)
		ORDER BY seq`)
}

// LastByRef returns the newest order with this ECR reference. Newest is
// the highest journal sequence: a clock that jumped cannot reorder sales.
func (j *Journal) LastByRef(ctx context.Context, ref string) (Order, error) {
	o, err := scanOrder(j.st.lastByRef.QueryRowContext(lookup(ctx), ref))
	if errors.Is(err, sql.ErrNoRows) {
		return Order{}, fmt.Errorf("%w: reference %q", ErrNotFound, ref)
	}
	if err != nil {
		return Order{}, storage("order by reference", err)
	}
	return o, nil
}

// LastByRefAmount returns the newest order with the register's reference
// ref for amount cents, by journal sequence: the sale a register asking
// again means when its reference was reused since for another amount.
func (j *Journal) LastByRefAmount(ctx context.Context, ref string, amount int64) (Order, error) {
	o, err := scanOrder(j.st.lastByRefAmount.QueryRowContext(lookup(ctx), ref, amount))
	if errors.Is(err, sql.ErrNoRows) {
		return Order{}, fmt.Errorf("%w: reference %q for %d", ErrNotFound, ref, amount)
	}
	if err != nil {
		return Order{}, storage("order by reference", err)
	}
	return o, nil
}

// LastPaid returns the newest paid order, by journal sequence.
func (j *Journal) LastPaid(ctx context.Context) (Order, error) {
	o, err := scanOrder(j.st.lastPaid.QueryRowContext(lookup(ctx)))
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
	rows, err := j.db.QueryContext(ctx, `SELECT t.at, t.from_state, t.to_state, t.status, t.detail FROM transitions t
		JOIN orders o ON o.seq = t.order_seq WHERE o.mch_order_no = ? ORDER BY t.n`, no)
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
		if o.State == StateArmed || o.State == StateCancelled {
			continue // an amount that never became a payment
		}
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

// MarkTaken records that the register took the final result of order no,
// so a later request with the same reference and amount is a new sale,
// even after a restart or a power cut. It is committed with fsync, after
// the answer left: on neither measured path.
func (j *Journal) MarkTaken(ctx context.Context, no string) error {
	if j.readOnly {
		return errors.New("journal opened read-only")
	}
	return j.write(ctx, "mark taken", func(t *wtx) error {
		n, err := t.exec(j.st.markTaken, no)
		if err != nil {
			return err
		}
		if n == 0 {
			return fmt.Errorf("%w: %s", ErrNotFound, no)
		}
		return nil
	})
}
