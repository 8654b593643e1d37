package journal

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// Refund is one refund of an order.
type Refund struct {
	MchRefundNo string
	MchOrderNo  string
	Amount      int64
	State       RefundState
	Message     string
	Source      string // who asked: ecr, cli, auto (late payment)
	ECRRef      string // the register's reference, for ECR refunds
	CreatedAt   time.Time
	UpdatedAt   time.Time
}

// NewRefund is what AddRefund needs.
type NewRefund struct {
	OrderNo string // mchOrderNo of the paid order
	Amount  int64
	Source  string
	ECRRef  string
}

// Refund sources.
const (
	RefundByECR      = "ecr"
	RefundByOperator = "cli"
	RefundAuto       = "auto"
)

// AddRefund commits a refund in state SENT before refund_order goes out.
// Refunds still SENT or UNKNOWN count against the refundable amount, so an
// uncertain refund can never be doubled by a second one.
func (j *Journal) AddRefund(ctx context.Context, n NewRefund, number func(counter uint64) string) (Refund, error) {
	now := j.now()
	orderNo, amount := n.OrderNo, n.Amount
	var r Refund
	err := j.write(ctx, "add refund", func(tx *sql.Tx) error {
		var state string
		var paid int64
		err := tx.QueryRow(`SELECT state, amount FROM orders WHERE mch_order_no = ?`, orderNo).Scan(&state, &paid)
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("%w: %s", ErrNotFound, orderNo)
		}
		if err != nil {
			return err
		}
		if state != StatePaid.String() && state != StateLatePaid.String() {
			return fmt.Errorf("%w: %s is %s", ErrNotRefundable, orderNo, state)
		}
		var committed int64
		if err := tx.QueryRow(`SELECT COALESCE(SUM(amount), 0) FROM refunds WHERE mch_order_no = ? AND state <> ?`,
			orderNo, string(RefundFailed)).Scan(&committed); err != nil {
			return err
		}
		// Compared as amount > paid-committed: committed+amount could
		// overflow for a huge amount and pass.
		if amount <= 0 || amount > paid-committed {
			return fmt.Errorf("%w: %d requested, %d refundable", ErrRefundTooLarge, amount, paid-committed)
		}
		counter, err := nextCounter(tx, "refund_counter")
		if err != nil {
			return err
		}
		r = Refund{MchRefundNo: number(counter), MchOrderNo: orderNo, Amount: amount, State: RefundSent,
			Source: n.Source, ECRRef: n.ECRRef, CreatedAt: time.UnixMilli(ms(now)), UpdatedAt: time.UnixMilli(ms(now))}
		if _, err := tx.Exec(`INSERT INTO refunds(mch_refund_no, mch_order_no, amount, state, source, ecr_ref, created_at, updated_at) VALUES (?,?,?,?,?,?,?,?)`,
			r.MchRefundNo, orderNo, amount, string(r.State), r.Source, r.ECRRef, ms(now), ms(now)); err != nil {
			return err
		}
		_, err = tx.Exec(`INSERT INTO transitions(mch_order_no, at, from_state, to_state, detail) VALUES (?,?,?,?,?)`,
			orderNo, ms(now), state, state, fmt.Sprintf("refund %s of %d sent", r.MchRefundNo, amount))
		return err
	})
	return r, err
}

// FinishRefund records a refund's outcome; DONE adds to the order's
// refunded amount in the same transaction. Only SENT or UNKNOWN refunds can
// be finished.
func (j *Journal) FinishRefund(ctx context.Context, refundNo string, state RefundState, msg string) (Refund, error) {
	return j.finishRefund(ctx, refundNo, state, msg, false)
}

// SettleRefund records what the operator found out about an UNKNOWN
// refund. A SENT refund is in flight in the daemon (or was interrupted and
// becomes UNKNOWN at its next start): it cannot be settled by hand.
func (j *Journal) SettleRefund(ctx context.Context, refundNo string, done bool, msg string) (Refund, error) {
	state := RefundFailed
	if done {
		state = RefundDone
	}
	return j.finishRefund(ctx, refundNo, state, msg, true)
}

func (j *Journal) finishRefund(ctx context.Context, refundNo string, state RefundState, msg string, onlyUnknown bool) (Refund, error) {
	now := j.now()
	var r Refund
	err := j.write(ctx, "finish refund", func(tx *sql.Tx) error {
		var cur string
		var created int64
		err := tx.QueryRow(`SELECT mch_order_no, amount, state, source, ecr_ref, created_at FROM refunds WHERE mch_refund_no = ?`, refundNo).
			Scan(&r.MchOrderNo, &r.Amount, &cur, &r.Source, &r.ECRRef, &created)
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("%w: refund %s", ErrNotFound, refundNo)
		}
		if err != nil {
			return err
		}
		if cur != string(RefundSent) && cur != string(RefundUnknown) || onlyUnknown && cur != string(RefundUnknown) {
			return fmt.Errorf("%w: refund %s is %s", ErrStateChanged, refundNo, cur)
		}
		r.MchRefundNo, r.State, r.Message = refundNo, state, msg
		r.CreatedAt, r.UpdatedAt = time.UnixMilli(created), time.UnixMilli(ms(now))
		if _, err := tx.Exec(`UPDATE refunds SET state=?, message=?, updated_at=? WHERE mch_refund_no=?`, string(state), msg, ms(now), refundNo); err != nil {
			return err
		}
		// The order's update time moves with every refund outcome, so
		// whoever watches orders (the reconciler) sees the change.
		done := int64(0)
		if state == RefundDone {
			done = r.Amount
		}
		if _, err := tx.Exec(`UPDATE orders SET refunded = refunded + ?, updated_at = ? WHERE mch_order_no = ?`, done, ms(now), r.MchOrderNo); err != nil {
			return err
		}
		_, err = tx.Exec(`INSERT INTO transitions(mch_order_no, at, from_state, to_state, detail)
			SELECT mch_order_no, ?, state, state, ? FROM orders WHERE mch_order_no = ?`,
			ms(now), fmt.Sprintf("refund %s %s %s", refundNo, state, msg), r.MchOrderNo)
		return err
	})
	return r, err
}

// Refunds lists an order's refunds, oldest first; an empty orderNo lists
// every refund.
func (j *Journal) Refunds(ctx context.Context, orderNo string) ([]Refund, error) {
	q := `SELECT mch_refund_no, mch_order_no, amount, state, message, source, ecr_ref, created_at, updated_at FROM refunds`
	var args []any
	if orderNo != "" {
		q += ` WHERE mch_order_no = ?`
		args = append(args, orderNo)
	}
	rows, err := j.db.QueryContext(ctx, q+` ORDER BY rowid`, args...)
	if err != nil {
		return nil, storage("list refunds", err)
	}
	defer rows.Close()
	var out []Refund
	for rows.Next() {
		var r Refund
		var state string
		var c, u int64
		if err := rows.Scan(&r.MchRefundNo, &r.MchOrderNo, &r.Amount, &state, &r.Message, &r.Source, &r.ECRRef, &c, &u); err != nil {
			return nil, storage("list refunds", err)
		}
		r.State, r.CreatedAt, r.UpdatedAt = RefundState(state), time.UnixMilli(c), time.UnixMilli(u)
		out = append(out, r)
	}
	return out, rows.Err()
}

// ECRRefund returns the newest refund the register asked for on this
// order for this amount (ErrNotFound when there is none), so a register
// retrying a refund whose answer it missed is answered from the journal
// and the refund is never sent twice.
func (j *Journal) ECRRefund(ctx context.Context, orderNo string, amount int64) (Refund, error) {
	var r Refund
	var state string
	var c, u int64
	err := j.db.QueryRowContext(ctx, `SELECT mch_refund_no, mch_order_no, amount, state, message, source, ecr_ref, created_at, updated_at
		FROM refunds WHERE mch_order_no = ? AND amount = ? AND source = ? ORDER BY rowid DESC LIMIT 1`, orderNo, amount, RefundByECR).
		Scan(&r.MchRefundNo, &r.MchOrderNo, &r.Amount, &state, &r.Message, &r.Source, &r.ECRRef, &c, &u)
	if errors.Is(err, sql.ErrNoRows) {
		return Refund{}, fmt.Errorf("%w: no register refund of %d on %s", ErrNotFound, amount, orderNo)
	}
	if err != nil {
		return Refund{}, storage("register refund lookup", err)
	}
	r.State, r.CreatedAt, r.UpdatedAt = RefundState(state), time.UnixMilli(c), time.UnixMilli(u)
	return r, nil
}

// RecentECRRefund returns the newest refund the register asked for with
// this reference and amount, made at or after since (ErrNotFound when
// none). With a blank reference the register names no sale, so a retry
// can only be recognised this way: after another sale it would otherwise
// refund that one.
func (j *Journal) RecentECRRefund(ctx context.Context, ref string, amount int64, since time.Time) (Refund, error) {
	var r Refund
	var state string
	var c, u int64
	err := j.db.QueryRowContext(ctx, `SELECT mch_refund_no, mch_order_no, amount, state, message, source, ecr_ref, created_at, updated_at
		FROM refunds WHERE source = ? AND ecr_ref = ? AND amount = ? AND created_at >= ? ORDER BY rowid DESC LIMIT 1`, RefundByECR, ref, amount, ms(since)).
		Scan(&r.MchRefundNo, &r.MchOrderNo, &r.Amount, &state, &r.Message, &r.Source, &r.ECRRef, &c, &u)
	if errors.Is(err, sql.ErrNoRows) {
		return Refund{}, fmt.Errorf("%w: no recent register refund of %d for %q", ErrNotFound, amount, ref)
	}
	if err != nil {
		return Refund{}, storage("register refund lookup", err)
	}
	r.State, r.CreatedAt, r.UpdatedAt = RefundState(state), time.UnixMilli(c), time.UnixMilli(u)
	return r, nil
}
