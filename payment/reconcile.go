package payment

import (
	"context"
	"errors"
	"math/rand/v2"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/scanpay/scanpay/payment/iotpay"
	"github.com/scanpay/scanpay/payment/journal"
)

// reconciler follows orders the lane could not settle (UNCONFIRMED) and
// late payments awaiting refund, in the background, with capped, jittered
// backoff, for ReconcileFor after each order was created.
type reconciler struct {
	t   *Terminal
	log *zap.Logger

	mu     sync.Mutex
	queued []journal.Order
	wake   chan struct{}
}

type recItem struct {
	order journal.Order
	next  time.Time
	delay time.Duration
}

func newReconciler(t *Terminal) *reconciler {
	return &reconciler{t: t, log: t.log.Named("reconcile"), wake: make(chan struct{}, 1)}
}

// add never blocks: the lane hands orders over and moves on.
func (r *reconciler) add(o journal.Order) {
	r.mu.Lock()
	r.queued = append(r.queued, o)
	r.mu.Unlock()
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

func (r *reconciler) run(ctx context.Context) {
	items := map[string]*recItem{}
	timer := stoppedTimer()
	defer timer.Stop()
	for {
		r.mu.Lock()
		for _, o := range r.queued {
			first := r.t.now()
			if o.State == journal.StateUnconfirmed {
				first = first.Add(r.t.cfg.ReconcileMin)
			}
			items[o.MchOrderNo] = &recItem{order: o, next: first, delay: r.t.cfg.ReconcileMin}
		}
		r.queued = nil
		r.mu.Unlock()

		now := r.t.now()
		var soonest time.Time
		for no, it := range items {
			if it.next.After(now) {
				if soonest.IsZero() || it.next.Before(soonest) {
					soonest = it.next
				}
				continue
			}
			keep, err := r.check(ctx, it)
			if err != nil {
				if ctx.Err() != nil {
					return
				}
				r.t.stopFatal(err)
				return
			}
			if !keep {
				delete(items, no)
				continue
			}
			if soonest.IsZero() || it.next.Before(soonest) {
				soonest = it.next
			}
		}
		if !soonest.IsZero() {
			timer.Reset(max(soonest.Sub(r.t.now()), time.Millisecond))
		}
		select {
		case <-ctx.Done():
			return
		case <-r.wake:
			timer.Stop()
		case <-timer.C:
		}
	}
}

// check makes one attempt on an item; keep reports whether to try again.
func (r *reconciler) check(ctx context.Context, it *recItem) (keep bool, err error) {
	o := it.order
	log := r.log.With(zap.String("mchOrderNo", o.MchOrderNo))
	if o.State == journal.StateLatePaid {
		return false, r.refundLate(ctx, o)
	}
	age := r.t.now().Sub(o.CreatedAt)
	if age > r.t.cfg.ReconcileFor {
		log.Error("order still unconfirmed after the reconcile window: check it in the IOTPay portal",
			zap.Duration("age", age), zap.Int64("amount", o.Amount))
		return false, nil
	}
	res := r.t.gw.QueryOrder(ctx, iotpay.QueryRequest{MchOrderNo: o.MchOrderNo})
	if ctx.Err() != nil {
		return false, ctx.Err()
	}
	if r.t.obs != nil {
		r.t.obs.GatewayCall("query_order", res.Outcome, 0)
	}
	var to journal.State
	msg := res.Message()
	switch {
	case res.Outcome == iotpay.OutcomePaid:
		to, msg = journal.StateLatePaid, "paid after the sale gave up: refund it"
	case res.Outcome == iotpay.OutcomeFailed:
		to = journal.StateDeclined
	case res.Outcome == iotpay.OutcomeNotFound && (o.NotSent || age >= r.t.cfg.NotFoundFinalAfter):
		to, msg = journal.StateDeclined, "never reached the gateway"
	default:
		it.delay = min(it.delay*2, r.t.cfg.ReconcileMax)
		jitter := time.Duration(rand.Int64N(int64(it.delay)/5 + 1))
		it.next = r.t.now().Add(it.delay - it.delay/10 + jitter)
		log.Debug("still unresolved", zap.Stringer("outcome", res.Outcome), zap.Duration("next", it.delay))
		return true, nil
	}
	moved, err := r.t.jr.Transition(ctx, o.MchOrderNo, journal.StateUnconfirmed, to,
		journal.Update{PayOrderID: res.PayOrderID, Status: res.Status, Message: msg})
	if errors.Is(err, journal.ErrStateChanged) || errors.Is(err, journal.ErrNotFound) {
		log.Info("order settled elsewhere")
		return false, nil
	}
	if err != nil {
		return false, err
	}
	if r.t.obs != nil {
		r.t.obs.SaleFinished(moved.Channel, moved.State)
	}
	if to == journal.StateLatePaid {
		log.Warn("late payment found", zap.String("payOrderId", moved.PayOrderID), zap.Int64("amount", moved.Amount))
		return false, r.refundLate(ctx, moved)
	}
	log.Info("unconfirmed order resolved", zap.Stringer("state", to), zap.String("message", msg))
	return false, nil
}

// refundLate refunds a late payment when configured; otherwise it stays
// listed as open for the operator.
func (r *reconciler) refundLate(ctx context.Context, o journal.Order) error {
	log := r.log.With(zap.String("mchOrderNo", o.MchOrderNo))
	if !r.t.cfg.RefundLate {
		log.Warn("late payment needs a refund by the operator (scanpay refund)", zap.Int64("amount", o.Amount), zap.Int64("refunded", o.Refunded))
		return nil
	}
	rf, err := r.t.refs.Refund(ctx, o.MchOrderNo, 0)
	switch {
	case isStorage(err):
		return err
	case err != nil:
		log.Warn("late payment not refunded automatically", zap.Error(err))
	default:
		log.Info("late payment refunded", zap.String("mchRefundNo", rf.MchRefundNo), zap.String("state", string(rf.State)))
	}
	return nil
}
