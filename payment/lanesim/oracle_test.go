package lanesim

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"

	"github.com/scanpay/scanpay/ecr"
	"github.com/scanpay/scanpay/payment"
	"github.com/scanpay/scanpay/payment/iotpay"
	"github.com/scanpay/scanpay/payment/iotpaysim"
	"github.com/scanpay/scanpay/payment/journal"
)

// check is the oracle: after the drain, the journal, the gateway's ledger
// and what the register was told must tell one story.
func (w *world) check() {
	ctx := context.Background()
	jr, err := journal.Open(filepath.Join(w.dir, "journal.db"), journal.Options{ReadOnly: true})
	if err != nil {
		w.t.Fatalf("seed %d: reopen journal: %v", w.seed, err)
	}
	defer jr.Close()
	orders, err := jr.Orders(ctx, journal.Filter{})
	if err != nil {
		w.t.Fatal(err)
	}
	refunds, err := jr.Refunds(ctx, "")
	if err != nil {
		w.t.Fatal(err)
	}
	bad := func(format string, a ...any) {
		w.t.Errorf("seed %d (profile %s, %d steps, %d crashes): %s", w.seed, w.profile.name, w.steps, w.crashes, fmt.Sprintf(format, a...))
	}
	byNo := map[string]journal.Order{}
	for _, o := range orders {
		byNo[o.MchOrderNo] = o
	}
	gwByNo := map[string]iotpaysim.Order{}
	gwPaid := func(no string) bool {
		g, ok := gwByNo[no]
		return ok && (g.Status == iotpay.StatusPaid || g.Status == iotpay.StatusPaidNotified)
	}
	gwRefunds := map[string]iotpaysim.Refund{}
	gwRefunded := map[string]int64{}
	for _, r := range w.sim.Refunds() {
		gwRefunds[r.MchRefundNo] = r
		gwRefunded[r.MchOrderNo] += r.Amount
	}
	refundsOf := map[string][]journal.Refund{}
	// forOperator: a paid order not refunded in full is left to the
	// operator, by a refund that needs a look (its reply was lost or it
	// failed), or as a late payment of a sale a restart interrupted (it
	// may have been shown approved), held with an alert naming it.
	forOperator := func(o journal.Order) bool {
		return listed(refundsOf[o.MchOrderNo]) || o.Interrupted && o.State == journal.StateLatePaid && w.alerted(payment.AlertLatePayment, o.MchOrderNo)
	}
	for _, r := range refunds {
		refundsOf[r.MchOrderNo] = append(refundsOf[r.MchOrderNo], r)
	}

	// A used code never reaches the gateway again while its link is on
	// disk: rule 4, checked before create_order leaves (from memory, by
	// the code filter, once loaded). The one resend allowed is a code
	// whose link a failed attach lost (the order stayed ARMED without it).
	firstWith := map[string]string{} // the code's SHA-256 → the first order sent with it
	for _, g := range w.sim.Orders() {
		first, seen := firstWith[g.CodeSHA256]
		if !seen {
			firstWith[g.CodeSHA256] = g.MchOrderNo
			continue
		}
		if o, ok := byNo[first]; ok && o.CodeHash != "" {
			bad("order %s sent a used payment code (%s) that order %s holds on disk", g.MchOrderNo, g.CodeMasked, first)
		}
	}

	// The gateway and the journal agree on every order.
	misbooked := map[string]bool{}
	for _, g := range w.sim.Orders() {
		gwByNo[g.MchOrderNo] = g
		o, ok := byNo[g.MchOrderNo]
		if !ok {
			bad("gateway order %s is not in the journal", g.MchOrderNo)
			continue
		}
		if o.Amount != g.Amount || o.Currency != g.Currency {
			// The gateway booked other figures: nothing it says about this
			// order may approve it; it stays open, alerted, for the operator.
			if o.State != journal.StateUnconfirmed && !(o.State == journal.StateDeclined && !(g.Status == iotpay.StatusPaid || g.Status == iotpay.StatusPaidNotified)) {
				bad("order %s: journal %d %s, gateway booked %d %s, and the journal says %s", o.MchOrderNo, o.Amount, o.Currency, g.Amount, g.Currency, o.State)
			}
			misbooked[o.MchOrderNo] = true
		}
	}
	for _, o := range orders {
		paidHere := o.State == journal.StatePaid || o.State == journal.StateLatePaid
		paidThere := gwPaid(o.MchOrderNo)
		switch {
		case misbooked[o.MchOrderNo]:
			// checked above
		case paidHere && !paidThere:
			bad("order %s is %s in the journal, not paid at the gateway", o.MchOrderNo, o.State)
		case unverifiable(o.Amount):
			// Every reply is badly signed: it must stay open for the
			// operator, never approved and never declined.
			if o.State != journal.StateUnconfirmed && !((o.State == journal.StateDeclined || o.State == journal.StateCancelled) && !paidThere) {
				bad("order %s, whose replies never verify, is %s", o.MchOrderNo, o.State)
			}
		case paidThere && !paidHere:
			bad("order %s is paid at the gateway but %s in the journal", o.MchOrderNo, o.State)
		case o.State.Open():
			bad("order %s is still %s after the drain", o.MchOrderNo, o.State)
		}
		if paidHere && paidThere && o.PayOrderID != "" && o.PayOrderID != gwByNo[o.MchOrderNo].PayOrderID {
			bad("paid order %s has IOTPay id %q, the gateway %q", o.MchOrderNo, o.PayOrderID, gwByNo[o.MchOrderNo].PayOrderID)
		}
		if o.State == journal.StateLatePaid && o.Refunded != o.Amount && !forOperator(o) {
			bad("late payment %s refunded %d of %d and not listed for the operator", o.MchOrderNo, o.Refunded, o.Amount)
		}
		if gwRefunded[o.MchOrderNo] > o.Amount {
			bad("order %s refunded %d at the gateway, more than its %d", o.MchOrderNo, gwRefunded[o.MchOrderNo], o.Amount)
		}
		var done int64
		for _, r := range refundsOf[o.MchOrderNo] {
			if r.State == journal.RefundDone {
				done += r.Amount
			}
		}
		if done != o.Refunded {
			bad("order %s: refunded %d, DONE refunds %d", o.MchOrderNo, o.Refunded, done)
		}
	}
	for _, r := range refunds {
		_, executed := gwRefunds[r.MchRefundNo]
		switch r.State {
		case journal.RefundDone:
			if !executed {
				bad("refund %s is DONE but the gateway has none", r.MchRefundNo)
			}
		case journal.RefundFailed:
			if executed {
				bad("refund %s is FAILED but the gateway made it", r.MchRefundNo)
			}
		case journal.RefundSent:
			bad("refund %s is still SENT after the drain", r.MchRefundNo)
		}
	}

	// What the register was told is backed by the orders made for it.
	for _, req := range w.requests {
		if req.refund {
			w.checkRefund(req, refunds, gwRefunds, bad)
			continue
		}
		var mine []journal.Order
		for _, o := range orders {
			if req.inWindow(o.Seq) {
				mine = append(mine, o)
			}
		}
		var paid []journal.Order
		for _, o := range mine {
			if o.Source == "ecr" && (o.ECRRef != req.req.Ref() || o.Amount != req.req.Amount || o.ECRType != string(req.req.Type)) {
				bad("request %d (%s) made order %s for %s %d type %s", req.id, req.key(), o.MchOrderNo, o.ECRRef, o.Amount, o.ECRType)
			}
			if gwPaid(o.MchOrderNo) {
				paid = append(paid, o)
			}
		}
		hasApproval := req.approved()
		if hasApproval {
			backed := false
			for _, o := range paid {
				backed = backed || o.State == journal.StatePaid
			}
			if !backed {
				bad("request %d (%s) was approved with no paid order made for it (orders %v)", req.id, req.key(), names(mine))
			}
			for _, a := range req.answers {
				if a == ecr.StatusRefused {
					bad("request %d (%s) was told both approved and refused: %q", req.id, req.key(), req.answers)
				}
			}
		}
		// A request paid twice (a register that retried a sale it was
		// told "not verified" for) needs every payment but one refunded, or
		// on the operator's list.
		unrefunded := 0
		for _, o := range paid {
			if o.Refunded < o.Amount && !forOperator(o) {
				unrefunded++
			}
		}
		if unrefunded > 1 {
			bad("request %d (%s) has %d paid orders not refunded: %v", req.id, req.key(), unrefunded, names(paid))
		}
		if req.last() == ecr.StatusRefused && unrefunded > 0 {
			bad("request %d (%s) was told refused, but its order is paid and not refunded: %v", req.id, req.key(), names(paid))
		}
	}

	// No payment code anywhere but at the gateway.
	w.checkNoCodes(orders)
}

// inWindow reports whether the journal sequence seq was created during
// one of the request's attempts.
func (r *request) inWindow(seq uint64) bool {
	for _, a := range r.attempts {
		if seq > a.seqBefore && seq <= a.seqAfter {
			return true
		}
	}
	return false
}

func (w *world) checkRefund(req *request, refunds []journal.Refund, gw map[string]iotpaysim.Refund, bad func(string, ...any)) {
	executed, done := 0, false
	for _, a := range req.attempts {
		for i := a.refundsBefore; i < a.refundsAfter && i < len(refunds); i++ {
			r := refunds[i]
			if r.Source != journal.RefundByECR {
				continue // the reconciler refunding a late payment meanwhile
			}
			if r.Amount != req.req.Amount || r.ECRRef != req.req.Ref() {
				bad("refund request %d (%s) made refund %s of %d for %q", req.id, req.key(), r.MchRefundNo, r.Amount, r.ECRRef)
			}
			if _, ok := gw[r.MchRefundNo]; ok {
				executed++
			}
			done = done || r.State == journal.RefundDone
		}
	}
	if executed > 1 {
		bad("refund request %d (%s) was executed %d times", req.id, req.key(), executed)
	}
	if req.approved() && !done {
		bad("refund request %d (%s) was approved with no refund made for it", req.id, req.key())
	}
	if req.last() == ecr.StatusRefused && executed > 0 {
		bad("refund request %d (%s) was told refused, but the refund was made", req.id, req.key())
	}
}

// listed reports whether a late payment's refund is for the operator: its
// reply was lost, or the gateway refused it.
func listed(rs []journal.Refund) bool {
	for _, r := range rs {
		if r.State == journal.RefundUnknown || r.State == journal.RefundFailed {
			return true
		}
	}
	return false
}

// alerted reports whether the lane raised an alert of kind about order no.
func (w *world) alerted(kind, no string) bool {
	for _, e := range w.logs.All() {
		m := e.ContextMap()
		if m["alert"] == kind && m["mchOrderNo"] == no {
			return true
		}
	}
	return false
}

func (w *world) checkNoCodes(orders []journal.Order) {
	var texts []string
	for _, e := range w.logs.All() {
		texts = append(texts, e.Message)
		for k, v := range e.ContextMap() {
			texts = append(texts, k+"="+fmt.Sprint(v))
		}
	}
	w.screens.mu.Lock()
	for _, s := range w.screens.all {
		texts = append(texts, s.Reason, s.Wallet)
	}
	w.screens.mu.Unlock()
	texts = append(texts, w.frames...)
	for _, o := range orders {
		texts = append(texts, o.CodeMasked, o.Message, o.CodeHash)
	}
	all := strings.Join(texts, "\n")
	for _, c := range w.codes {
		if strings.Contains(all, c) {
			w.t.Errorf("seed %d: the payment code %s appears outside the gateway", w.seed, iotpay.MaskCode(c))
		}
	}
}

func names(os []journal.Order) []string {
	var out []string
	for _, o := range os {
		out = append(out, fmt.Sprintf("%s:%s", o.MchOrderNo, o.State))
	}
	return out
}

// checkRefundable: every paid order can be refunded by the operator
// (`scanpay refund`), even one whose replies never carried IOTPay's id:
// the refund asks for it first. Run after check, on a lane that is
// stopped, since it changes what it checks.
func (w *world) checkRefundable() {
	ctx := context.Background()
	jr, err := journal.Open(filepath.Join(w.dir, "journal.db"), journal.Options{Now: w.wall})
	if err != nil {
		w.t.Fatal(err)
	}
	defer jr.Close()
	orders, _ := jr.Orders(ctx, journal.Filter{States: []journal.State{journal.StatePaid}})
	refunder := &payment.Refunder{TerminalID: "SIM", Gateway: w.client(), Journal: jr, Logger: w.log.Named("operator")}
	for _, o := range orders {
		if o.PayOrderID != "" || o.Refunded == o.Amount {
			continue
		}
		rf, err := refunder.Refund(ctx, payment.RefundRequest{ID: o.MchOrderNo, Source: journal.RefundByOperator})
		if err != nil || rf.State != journal.RefundDone {
			w.t.Errorf("seed %d: paid order %s without IOTPay's id cannot be refunded: %+v %v", w.seed, o.MchOrderNo, rf, err)
		}
	}
}
