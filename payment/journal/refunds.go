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
	CreatedAt   time.Time
	UpdatedAt   time.Time
}

// AddRefund commits a refund in state SENT before refund_order goes out.
// Refunds still SENT or UNKNOWN count against the refundable amount, so an
// uncertain refund can never be doubled by a second one.
func (j *Journal) AddRefund(ctx context.Context, orderNo string, amount int64, number func(counter uint64) string) (Refund, error) {
	now := j.now()
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
		if amount <= 0 || committed+amount > paid {
			return fmt.Errorf("%w: %d requested, %d refundable", ErrRefundTooLarge, amount, paid-committed)
		}
		counter, err := nextCounter(tx, "refund_counter")
		if err != nil {
			return err
		}
		r = Refund{MchRefundNo: number(counter), MchOrderNo: orderNo, Amount: amount, State: RefundSent,
			CreatedAt: time.UnixMilli(ms(now)), UpdatedAt: time.UnixMilli(ms(now))}
		if _, err := tx.Exec(`INSERT INTO refunds(mch_refund_no, mch_order_no, amount, state, created_at, updated_at) VALUES (?,?,?,?,?,?)`,
			r.MchRefundNo, orderNo, amount, string(r.State), ms(now), ms(now)); err != nil {
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
	now := j.now()
	var r Refund
	err := j.write(ctx, "finish refund", func(tx *sql.Tx) error {
		var cur string
		var created int64
		err := tx.QueryRow(`SELECT mch_order_no, amount, state, created_at FROM refunds WHERE mch_refund_no = ?`, refundNo).
			Scan(&r.MchOrderNo, &r.Amount, &cur, &created)
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("%w: refund %s", ErrNotFound, refundNo)
		}
		if err != nil {
			return err
		}
		if cur != string(RefundSent) && cur != string(RefundUnknown) {
			return fmt.Errorf("%w: refund %s is %s", ErrStateChanged, refundNo, cur)
		}
		r.MchRefundNo, r.State, r.Message = refundNo, state, msg
		r.CreatedAt, r.UpdatedAt = time.UnixMilli(created), time.UnixMilli(ms(now))
		if _, err := tx.Exec(`UPDATE refunds SET state=?, message=?, updated_at=? WHERE mch_refund_no=?`, string(state), msg, ms(now), refundNo); err != nil {
			return err
		}
		if state == RefundDone {
			if _, err := tx.Exec(`UPDATE orders SET refunded = refunded + ?, updated_at = ? WHERE mch_order_no = ?`, r.Amount, ms(now), r.MchOrderNo); err != nil {
				return err
			}
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
	q := `SELECT mch_refund_no, mch_order_no, amount, state, message, created_at, updated_at FROM refunds`
	var args []any
	if orderNo != "" {
		q += ` WHERE mch_order_no = ?`
		args = append(args, orderNo)
	}
	rows, err := j.db.QueryContext(ctx, q+` ORDER BY created_at, mch_refund_no`, args...)
	if err != nil {
		return nil, storage("list refunds", err)
	}
	defer rows.Close()
	var out []Refund
	for rows.Next() {
		var r Refund
		var state string
		var c, u int64
		if err := rows.Scan(&r.MchRefundNo, &r.MchOrderNo, &r.Amount, &state, &r.Message, &c, &u); err != nil {
			return nil, storage("list refunds", err)
		}
		r.State, r.CreatedAt, r.UpdatedAt = RefundState(state), time.UnixMilli(c), time.UnixMilli(u)
		out = append(out, r)
	}
	return out, rows.Err()
}
