package journal

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/scanpay/scanpay/fleet/event"
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
	// Taken: the register took this refund's final answer, so the same
	// request again is a new refund, not a retry (MarkRefundTaken).
	Taken     bool
	CreatedAt time.Time
	UpdatedAt time.Time
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

const refundCols = `SELECT mch_refund_no, mch_order_no, amount, state, message, source, ecr_ref, created_at, updated_at, ecr_taken FROM refunds`

func scanRefund(s scanner) (Refund, error) {
	var r Refund
	var state string
	var c, u int64
	var taken int
	if err := s.Scan(&r.MchRefundNo, &r.MchOrderNo, &r.Amount, &state, &r.Message, &r.Source, &r.ECRRef, &c, &u, &taken); err != nil {
		return Refund{}, err
	}
	r.State, r.CreatedAt, r.UpdatedAt, r.Taken = RefundState(state), time.UnixMilli(c), time.UnixMilli(u), taken != 0
	return r, nil
}

// AddRefund commits a refund in state SENT before refund_order goes out.
// Refunds still SENT or UNKNOWN count against the refundable amount, so an
// uncertain refund can never be doubled by a second one.
func (j *Journal) AddRefund(ctx context.Context, n NewRefund, number func(counter uint64) string) (Refund, error) {
	orderNo, amount := n.OrderNo, n.Amount
	var r Refund
	err := j.write(ctx, "add refund", func(t *wtx) error {
		var state string
		var paid int64
		var orderSeq uint64
		err := t.row(j.st.orderForRefund, orderNo).Scan(&orderSeq, &state, &paid)
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
		if err := t.row(j.st.committedRefunds, orderNo).Scan(&committed); err != nil {
			return err
		}
		// Compared as amount > paid-committed: committed+amount could
		// overflow for a huge amount and pass.
		if amount <= 0 || amount > paid-committed {
			return fmt.Errorf("%w: %d requested, %d refundable", ErrRefundTooLarge, amount, paid-committed)
		}
		var seq uint64
		if err := t.row(j.st.nextRefundSeq).Scan(&seq); err != nil {
			return err
		}
		now := ms(j.now())
		r = Refund{MchRefundNo: number(seq), MchOrderNo: orderNo, Amount: amount, State: RefundSent,
			Source: n.Source, ECRRef: n.ECRRef, CreatedAt: time.UnixMilli(now), UpdatedAt: time.UnixMilli(now)}
		if _, err := t.exec(j.st.insertRefund, seq, r.MchRefundNo, orderNo, amount, string(r.State), r.Source, r.ECRRef, now, now); err != nil {
			return err
		}
		if err := j.logTransition(t, orderSeq, now, state, state, -1, fmt.Sprintf("refund %s of %d sent", r.MchRefundNo, amount)); err != nil {
			return err
		}
		return j.emit(t, event.KindRefund, orderNo, r.MchRefundNo)
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
	var r Refund
	err := j.write(ctx, "finish refund", func(t *wtx) error {
		var cur string
		var created int64
		err := t.row(j.st.getRefund, refundNo).Scan(&r.MchOrderNo, &r.Amount, &cur, &r.Source, &r.ECRRef, &created)
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("%w: refund %s", ErrNotFound, refundNo)
		}
		if err != nil {
			return err
		}
		if cur != string(RefundSent) && cur != string(RefundUnknown) || onlyUnknown && cur != string(RefundUnknown) {
			return fmt.Errorf("%w: refund %s is %s", ErrStateChanged, refundNo, cur)
		}
		now := ms(j.now())
		r.MchRefundNo, r.State, r.Message = refundNo, state, msg
		r.CreatedAt, r.UpdatedAt = time.UnixMilli(created), time.UnixMilli(now)
		if _, err := t.exec(j.st.finishRefund, string(state), msg, now, refundNo); err != nil {
			return err
		}
		// The order's update time moves with every refund outcome, so
		// whoever watches orders (the reconciler) sees the change.
		done := int64(0)
		if state == RefundDone {
			done = r.Amount
		}
		if _, err := t.exec(j.st.refundOrderUpdate, done, now, r.MchOrderNo); err != nil {
			return err
		}
		var orderSeq uint64
		var ostate string
		var paid int64
		if err := t.row(j.st.orderForRefund, r.MchOrderNo).Scan(&orderSeq, &ostate, &paid); err != nil {
			return err
		}
		if err := j.logTransition(t, orderSeq, now, ostate, ostate, -1, fmt.Sprintf("refund %s %s %s", refundNo, state, msg)); err != nil {
			return err
		}
		return j.emit(t, event.KindRefund, r.MchOrderNo, refundNo)
	})
	return r, err
}

// Refunds lists an order's refunds, oldest first; an empty orderNo lists
// every refund.
func (j *Journal) Refunds(ctx context.Context, orderNo string) ([]Refund, error) {
	q := refundCols
	var args []any
	if orderNo != "" {
		q += ` WHERE mch_order_no = ?`
		args = append(args, orderNo)
	}
	rows, err := j.db.QueryContext(ctx, q+` ORDER BY seq`, args...)
	if err != nil {
		return nil, storage("list refunds", err)
	}
	return collectRefunds(rows)
}

// OpenRefunds lists refunds still SENT or UNKNOWN, oldest first (a start
// reads these, not every refund ever made).
func (j *Journal) OpenRefunds(ctx context.Context) ([]Refund, error) {
	rows, err := j.st.openRefunds.QueryContext(ctx)
	if err != nil {
		return nil, storage("open refunds", err)
	}
	return collectRefunds(rows)
}

func collectRefunds(rows *sql.Rows) ([]Refund, error) {
	defer rows.Close()
	var out []Refund
	for rows.Next() {
		r, err := scanRefund(rows)
		if err != nil {
			return nil, storage("list refunds", err)
		}
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, storage("list refunds", err)
	}
	return out, nil
}

// RecentECRRefund returns the newest refund the register asked for with
// this reference and amount, made at or after since, whose answer the
// register has not taken (ErrNotFound when none): the only refund the same
// request again can be a retry of. One it took answers nothing: the same
// request again is a new refund.
func (j *Journal) RecentECRRefund(ctx context.Context, ref string, amount int64, since time.Time) (Refund, error) {
	r, err := scanRefund(j.st.recentECRRefund.QueryRowContext(ctx, ref, amount, ms(since)))
	if errors.Is(err, sql.ErrNoRows) {
		return Refund{}, fmt.Errorf("%w: no recent register refund of %d for %q", ErrNotFound, amount, ref)
	}
	if err != nil {
		return Refund{}, storage("register refund lookup", err)
	}
	return r, nil
}

// MarkRefundTaken records that the register took the final answer of
// refund no (committed with fsync, after the answer left: on no measured
// path), so the same request again is a new refund.
func (j *Journal) MarkRefundTaken(ctx context.Context, no string) error {
	if j.readOnly {
		return errors.New("journal opened read-only")
	}
	return j.write(ctx, "mark refund taken", func(t *wtx) error {
		n, err := t.exec(j.st.markRefundTaken, no)
		if err != nil {
			return err
		}
		if n == 0 {
			return fmt.Errorf("%w: refund %s", ErrNotFound, no)
		}
		return nil
	})
}
