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
// backoff. Its windows run on the monotonic clock from the moment it took
// an order over, so a wall clock that jumps (a Pi without RTC getting its
// time from NTP) can neither drop an order unqueried nor keep querying
// forever; a last query is always made before it gives up. It also re-reads
// the journal every ReconcileRescan, so orders another process moved (an
// operator's `scanpay query` that found a late payment) are taken up.
type reconciler struct {
	t   *Terminal
	log *zap.Logger

	mu     sync.Mutex
	queued []journal.Order
	wake   chan struct{}
}

type recItem struct {
	order       journal.Order
	handedAt    time.Time // monotonic: when the reconciler took it over
	next        time.Time // monotonic: the next attempt
	delay       time.Duration
	notFoundAt  time.Time // monotonic: first "no such order" in a row; zero when none
	lastQueried bool      // the final query after the window was made
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
	// done remembers orders this run has finished with, by the journal's
	// last update time, so a rescan takes one up again only when someone
	// changed it.
	done := map[string]time.Time{}
	timer := stoppedTimer()
	defer timer.Stop()
	rescan := time.NewTicker(r.t.cfg.ReconcileRescan)
	defer rescan.Stop()
	take := func(o journal.Order) {
		if _, ok := items[o.MchOrderNo]; ok {
			return
		}
		now := time.Now()
		first := now
		if o.State == journal.StateUnconfirmed {
			first = now.Add(r.t.cfg.ReconcileMin)
		}
		items[o.MchOrderNo] = &recItem{order: o, handedAt: now, next: first, delay: r.t.cfg.ReconcileMin}
	}
	for {
		r.mu.Lock()
		for _, o := range r.queued {
			delete(done, o.MchOrderNo)
			take(o)
		}
		r.queued = nil
		r.mu.Unlock()

		var soonest time.Time
		for no, it := range items {
			if it.next.After(time.Now()) {
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
				r.t.stopFatal(ctx, err)
				return
			}
			if !keep {
				delete(items, no)
				// Remember the order as the journal has it now (a refund
				// may have changed it), so a rescan skips it until someone
				// else changes it.
				cur, err := r.t.jr.Get(ctx, no)
				switch {
				case err == nil:
					done[no] = cur.UpdatedAt
				case !errors.Is(err, journal.ErrNotFound) && ctx.Err() == nil:
					r.t.stopFatal(ctx, err)
					return
				}
				continue
			}
			if soonest.IsZero() || it.next.Before(soonest) {
				soonest = it.next
			}
		}
		if !soonest.IsZero() {
			timer.Reset(max(time.Until(soonest), time.Millisecond))
		}
		select {
		case <-ctx.Done():
			return
		case <-r.wake:
			timer.Stop()
		case <-timer.C:
		case <-rescan.C:
			timer.Stop()
			if err := r.rescan(ctx, items, done, take); err != nil {
				if ctx.Err() != nil {
					return
				}
				r.t.stopFatal(ctx, err)
				return
			}
		}
	}
}

// rescan takes up unconfirmed orders and unrefunded late payments the
// reconciler is not following, unless it finished with them and nobody
// changed them since.
func (r *reconciler) rescan(ctx context.Context, items map[string]*recItem, done map[string]time.Time, take func(journal.Order)) error {
	open, err := r.t.jr.OpenOrders(ctx)
	if err != nil {
		return err
	}
	for _, o := range open {
		if o.State != journal.StateUnconfirmed && o.State != journal.StateLatePaid {
			continue // SUBMITTING and POLLING orders are the lane's
		}
		if at, ok := done[o.MchOrderNo]; ok && at.Equal(o.UpdatedAt) {
			continue
		}
		if _, ok := items[o.MchOrderNo]; !ok {
			r.log.Info("taking up an order from the journal", zap.String("mchOrderNo", o.MchOrderNo), zap.Stringer("state", o.State))
		}
		delete(done, o.MchOrderNo)
		take(o)
	}
	return nil
}

// check makes one attempt on an item; keep reports whether to try again.
func (r *reconciler) check(ctx context.Context, it *recItem) (keep bool, err error) {
	o := it.order
	log := r.log.With(zap.String("mchOrderNo", o.MchOrderNo))
	if o.State == journal.StateLatePaid {
		return r.retryLater(it, r.refundLate(ctx, o))
	}
	overdue := time.Since(it.handedAt) >= r.t.cfg.ReconcileFor
	res := r.t.gw.QueryOrder(ctx, iotpay.QueryRequest{MchOrderNo: o.MchOrderNo})
	if ctx.Err() != nil {
		return false, ctx.Err()
	}
	if r.t.obs != nil {
		r.t.obs.GatewayCall("query_order", res.Outcome, 0)
	}
	switch res.Outcome {
	case iotpay.OutcomeNotFound:
		if it.notFoundAt.IsZero() {
			it.notFoundAt = time.Now()
		}
	case iotpay.OutcomePending, iotpay.OutcomePaid, iotpay.OutcomeFailed:
		it.notFoundAt = time.Time{} // the gateway knows the order
	}
	never := !it.notFoundAt.IsZero() && time.Since(it.notFoundAt) >= r.t.cfg.NotFoundFinalAfter
	d := Decide(o, "query_order", res, Facts{NeverReached: never})
	if d.Mismatch != "" {
		r.t.alert(AlertReplyMismatch, "gateway reply does not match the order: treated as unknown",
			zap.String("mchOrderNo", o.MchOrderNo), zap.String("why", d.Mismatch))
	}
	if d.To == 0 {
		if overdue {
			r.t.alert(AlertUnresolved, "order still unconfirmed after the reconcile window: check it in the IOTPay portal",
				zap.String("mchOrderNo", o.MchOrderNo), zap.Duration("followed", time.Since(it.handedAt)), zap.Int64("amount", o.Amount))
			return false, nil
		}
		it.delay = min(it.delay*2, r.t.cfg.ReconcileMax)
		jitter := time.Duration(rand.Int64N(int64(it.delay)/5 + 1))
		it.next = time.Now().Add(it.delay - it.delay/10 + jitter)
		if end := it.handedAt.Add(r.t.cfg.ReconcileFor); it.next.After(end) {
			// The last query falls on the window's end, not past it.
			it.next = end
		}
		log.Debug("still unresolved", zap.Stringer("outcome", res.Outcome), zap.Duration("next", it.delay))
		return true, nil
	}
	moved, err := r.t.jr.Transition(ctx, o.MchOrderNo, o.State, d.To, d.Update)
	if errors.Is(err, journal.ErrStateChanged) || errors.Is(err, journal.ErrNotFound) {
		// Settled elsewhere (an operator's query, say): read what the
		// journal says now, and refund it if it became a late payment.
		cur, gerr := r.t.jr.Get(ctx, o.MchOrderNo)
		if gerr != nil {
			if errors.Is(gerr, journal.ErrNotFound) {
				return false, nil
			}
			return false, gerr
		}
		log.Info("order settled elsewhere", zap.Stringer("state", cur.State))
		it.order = cur
		if cur.State == journal.StateLatePaid {
			return r.retryLater(it, r.refundLate(ctx, cur))
		}
		return cur.State == journal.StateUnconfirmed, nil
	}
	if err != nil {
		return false, err
	}
	it.order = moved
	if r.t.obs != nil {
		r.t.obs.SaleFinished(moved.Channel, moved.State)
	}
	if d.To == journal.StateLatePaid {
		r.t.alert(AlertLatePayment, "late payment found", zap.String("mchOrderNo", moved.MchOrderNo),
			zap.String("payOrderId", moved.PayOrderID), zap.Int64("amount", moved.Amount))
		return r.retryLater(it, r.refundLate(ctx, moved))
	}
	log.Info("unconfirmed order resolved", zap.Stringer("state", d.To), zap.String("message", d.Update.Message))
	return false, nil
}

// errRefundLater says a late payment's refund could not be sent yet (no
// IOTPay order id, say) and is tried again with the backoff.
var errRefundLater = errors.New("refund not sent yet")

// retryLater turns refundLate's outcome into check's: a refund that could
// not be sent is tried again after the item's backoff.
func (r *reconciler) retryLater(it *recItem, err error) (keep bool, _ error) {
	if !errors.Is(err, errRefundLater) {
		return false, err
	}
	if time.Since(it.handedAt) >= r.t.cfg.ReconcileFor {
		r.t.alert(AlertUnresolved, "late payment still not refunded after the reconcile window: refund it by hand (scanpay refund)",
			zap.String("mchOrderNo", it.order.MchOrderNo), zap.Int64("amount", it.order.Amount))
		return false, nil
	}
	it.delay = min(it.delay*2, r.t.cfg.ReconcileMax)
	it.next = time.Now().Add(it.delay)
	return true, nil
}

// refundLate refunds a late payment when configured; otherwise it stays
// listed as open for the operator. A refund refused before it was sent for
// a reason that may pass returns errRefundLater.
func (r *reconciler) refundLate(ctx context.Context, o journal.Order) error {
	log := r.log.With(zap.String("mchOrderNo", o.MchOrderNo))
	if o.Interrupted {
		// A restart interrupted the sale after it may have been shown
		// approved (results go out before their commit): refunding it
		// could take back a sale the customer was told was paid.
		r.t.alert(AlertLatePayment, "late payment of a sale a restart interrupted: not refunded automatically; check the receipt, then scanpay refund if the customer paid again",
			zap.String("mchOrderNo", o.MchOrderNo), zap.Int64("amount", o.Amount))
		return nil
	}
	if !r.t.cfg.RefundLate {
		log.Warn("late payment needs a refund by the operator (scanpay refund)", zap.Int64("amount", o.Amount), zap.Int64("refunded", o.Refunded))
		return nil
	}
	rf, err := r.t.refs.Refund(ctx, RefundRequest{ID: o.MchOrderNo, Source: journal.RefundAuto})
	switch {
	case isStorage(err):
		return err
	case errors.Is(err, journal.ErrRefundTooLarge), errors.Is(err, journal.ErrNotRefundable), errors.Is(err, ErrNoOrder):
		// Nothing left to refund (an uncertain refund counts), or nothing
		// to refund at all: the operator's list shows why.
		log.Warn("late payment not refunded automatically", zap.Error(err))
	case err != nil:
		log.Warn("late payment refund not sent yet; trying again later", zap.Error(err))
		return errRefundLater
	default:
		log.Info("late payment refunded", zap.String("mchRefundNo", rf.MchRefundNo), zap.String("state", string(rf.State)))
	}
	return nil
}
