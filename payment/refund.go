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
	Observer   Observer
}

// RefundRequest names what to refund.
type RefundRequest struct {
	ID     string // mchOrderNo or payOrderId
	Amount int64  // cents; 0: all that is left
	Source string // journal.RefundByECR, RefundByOperator or RefundAuto
	ECRRef string // the register's reference, for register refunds
}

// RefundNumber builds an mchRefundNo (at most 12+1+6+4 = 23 characters).
func RefundNumber(terminalID string, counter uint64) string {
	return fmt.Sprintf("%sR%06d%s", terminalID, counter%1000000, randomSuffix(4))
}

// Refund refunds what req names. It returns the journaled refund; its
// State says what the gateway did. An error with an empty MchRefundNo means
// nothing was sent; an error with one (wrapping journal.ErrStorage) means
// it was sent and its outcome could not be saved.
func (r *Refunder) Refund(ctx context.Context, req RefundRequest) (journal.Refund, error) {
	log := r.Logger
	if log == nil {
		log = zap.NewNop()
	}
	o, err := r.Journal.Find(ctx, req.ID)
	if errors.Is(err, journal.ErrNotFound) {
		return journal.Refund{}, fmt.Errorf("%w: %s", ErrNoOrder, req.ID)
	}
	if err != nil {
		return journal.Refund{}, err
	}
	if o.State != journal.StatePaid && o.State != journal.StateLatePaid {
		return journal.Refund{}, fmt.Errorf("%w: order %s is %s: only paid orders can be refunded", journal.ErrNotRefundable, o.MchOrderNo, o.State)
	}
	if req.Amount < 0 {
		return journal.Refund{}, fmt.Errorf("refund amount %d is negative", req.Amount)
	}
	if o.PayOrderID == "" {
		// refund_order needs IOTPay's order id; a sale whose replies never
		// carried it asks once more before giving up.
		if o, err = r.repairPayOrderID(ctx, o); err != nil {
			return journal.Refund{}, err
		}
	}
	amount := req.Amount
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
	source := req.Source
	if source == "" {
		source = journal.RefundByOperator
	}
	rf, err := r.Journal.AddRefund(ctx, journal.NewRefund{OrderNo: o.MchOrderNo, Amount: amount, Source: source, ECRRef: req.ECRRef},
		func(n uint64) string { return RefundNumber(tid, n) })
	if err != nil {
		return journal.Refund{}, err
	}
	log.Info("refund sent", zap.String("mchRefundNo", rf.MchRefundNo), zap.String("mchOrderNo", o.MchOrderNo), zap.Int64("amount", amount), zap.String("source", source))
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

// repairPayOrderID queries a paid order whose IOTPay id was never recorded
// and records it when the (signed, matching) reply carries it.
func (r *Refunder) repairPayOrderID(ctx context.Context, o journal.Order) (journal.Order, error) {
	if r.Gateway == nil {
		return o, fmt.Errorf("order %s has no IOTPay order id: run scanpay query %s", o.MchOrderNo, o.MchOrderNo)
	}
	res := r.Gateway.QueryOrder(ctx, iotpay.QueryRequest{MchOrderNo: o.MchOrderNo})
	d := Decide(o, "query_order", res, Facts{})
	if d.Mismatch != "" || res.Outcome != iotpay.OutcomePaid || res.PayOrderID == "" {
		return o, fmt.Errorf("order %s has no IOTPay order id and IOTPay did not give it (%s): refund it in the IOTPay portal", o.MchOrderNo, res.Message())
	}
	return r.Journal.Transition(ctx, o.MchOrderNo, o.State, o.State, journal.Update{PayOrderID: res.PayOrderID, Status: res.Status, Message: o.Message})
}

// Resolve settles a refund whose reply was lost (UNKNOWN), after the
// operator has checked it in IOTPay's portal.
func (r *Refunder) Resolve(ctx context.Context, refundNo string, done bool) (journal.Refund, error) {
	return r.Journal.SettleRefund(ctx, refundNo, done, "resolved by operator")
}
