package payment

import (
	"context"
	"errors"
	"fmt"

	"go.uber.org/zap"

	"github.com/scanpay/scanpay/payment/iotpay"
	"github.com/scanpay/scanpay/payment/journal"
)

// Refunder refunds paid orders: the refund is journaled (SENT) before
// refund_order goes out and its outcome after. A lost reply leaves the
// refund UNKNOWN, still counted against the order, for the operator to
// re-check. The daemon and the CLI share it.
type Refunder struct {
	TerminalID string
	Currency   string
	Gateway    Gateway
	Journal    Journal
	Logger     *zap.Logger
}

// RefundNumber builds an mchRefundNo (at most 12+1+6+4 = 23 characters).
func RefundNumber(terminalID string, counter uint64) string {
	return fmt.Sprintf("%sR%06d%s", terminalID, counter%1000000, randomSuffix(4))
}

// Refund refunds amount cents (0: all that is left) of the order named by
// mchOrderNo or payOrderId. It returns the journaled refund; its State says
// what the gateway did. An error means nothing was sent (or, wrapping
// journal.ErrStorage, that the outcome could not be saved).
func (r *Refunder) Refund(ctx context.Context, id string, amount int64) (journal.Refund, error) {
	log := r.Logger
	if log == nil {
		log = zap.NewNop()
	}
	o, err := r.Journal.Find(ctx, id)
	if errors.Is(err, journal.ErrNotFound) {
		return journal.Refund{}, fmt.Errorf("%w: %s", ErrNoOrder, id)
	}
	if err != nil {
		return journal.Refund{}, err
	}
	if o.State != journal.StatePaid && o.State != journal.StateLatePaid {
		return journal.Refund{}, fmt.Errorf("order %s is %s: only paid orders can be refunded", o.MchOrderNo, o.State)
	}
	if o.PayOrderID == "" {
		return journal.Refund{}, fmt.Errorf("order %s has no IOTPay order id: query it first", o.MchOrderNo)
	}
	if amount < 0 {
		return journal.Refund{}, fmt.Errorf("refund amount %d is negative", amount)
	}
	if amount == 0 {
		refunds, err := r.Journal.Refunds(ctx, o.MchOrderNo)
		if err != nil {
			return journal.Refund{}, err
		}
		amount = o.Amount
		for _, rf := range refunds {
			if rf.State != journal.RefundFailed {
				amount -= rf.Amount
			}
		}
		if amount <= 0 {
			return journal.Refund{}, fmt.Errorf("%w: order %s has nothing left to refund", journal.ErrRefundTooLarge, o.MchOrderNo)
		}
	}
	tid := r.TerminalID
	if tid == "" {
		tid = o.TerminalID
	}
	rf, err := r.Journal.AddRefund(ctx, o.MchOrderNo, amount, func(n uint64) string { return RefundNumber(tid, n) })
	if err != nil {
		return journal.Refund{}, err
	}
	log.Info("refund sent", zap.String("mchRefundNo", rf.MchRefundNo), zap.String("mchOrderNo", o.MchOrderNo), zap.Int64("amount", amount))
	res := r.Gateway.RefundOrder(ctx, iotpay.RefundRequest{MchRefundNo: rf.MchRefundNo, PayOrderID: o.PayOrderID, Amount: amount, Currency: o.Currency})
	state := journal.RefundUnknown
	switch res.Outcome {
	case iotpay.OutcomeRefunded:
		state = journal.RefundDone
	case iotpay.OutcomeFailed:
		state = journal.RefundFailed
	}
	msg := ""
	if res.Err != nil {
		msg = res.Err.Msg
	}
	// Record the outcome even if the caller's context ended meanwhile.
	fin, err := r.Journal.FinishRefund(context.WithoutCancel(ctx), rf.MchRefundNo, state, msg)
	if err != nil {
		return rf, err
	}
	log.Info("refund finished", zap.String("mchRefundNo", rf.MchRefundNo), zap.String("state", string(state)), zap.String("message", msg))
	return fin, nil
}

// Resolve settles a refund whose reply was lost, after the operator has
// checked it in IOTPay's portal.
func (r *Refunder) Resolve(ctx context.Context, refundNo string, done bool) (journal.Refund, error) {
	state := journal.RefundFailed
	if done {
		state = journal.RefundDone
	}
	return r.Journal.FinishRefund(ctx, refundNo, state, "resolved by operator")
}
