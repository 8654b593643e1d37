package lanesim

import (
	"context"
	"fmt"
	"time"

	"github.com/scanpay/scanpay/ecr"
	"github.com/scanpay/scanpay/payment"
)

// request is one thing the register asked for, across every time it sent
// it (a register that missed the answer sends the same request again).
type request struct {
	id       int
	refund   bool
	req      ecr.Request
	attempts []attempt
	answers  []byte // every status the register received, in order
	missed   bool   // the last attempt's answer never arrived
	// When the last attempt ended (fake monotonic time), the wall clock's
	// offset then and the crash count: a register asks again only within
	// the link's window (ecr.keep_results, 10 min), and across a restart
	// the link can only judge that by the wall clock.
	lastAt     time.Time
	lastOffset int64
	lastCrash  int
	// The same for the attempt that made the request's newest order: after
	// a restart the link judges the window by that order's wall-clock time.
	orderAt     time.Time
	orderOffset int64
}

// attempt is one send of a request: what the journal held before it and
// after the lane settled, so the oracle can tell which orders and refunds
// it caused (the register is sequential, so attempts never overlap).
type attempt struct {
	taken                       bool
	seqBefore, seqAfter         uint64
	refundsBefore, refundsAfter int
}

func (r *request) key() string {
	return fmt.Sprintf("%s|%d|%s|%s|%c", r.req.Ref(), r.req.Amount, r.req.Currency, r.req.POS, r.req.Type)
}

func (r *request) approved() bool {
	for _, a := range r.answers {
		if a == ecr.StatusApproved {
			return true
		}
	}
	return false
}

func (r *request) last() byte {
	if len(r.answers) == 0 {
		return 0
	}
	return r.answers[len(r.answers)-1]
}

// final reports whether the register holds a final answer (approved or
// refused) it took.
func (r *request) final() bool {
	l := r.last()
	return !r.missed && (l == ecr.StatusApproved || l == ecr.StatusRefused)
}

// run plays steps operations, then drains the lane and checks the oracle.
func (w *world) run(steps int) {
	w.start()
	type op struct {
		weight int
		do     func()
	}
	ops := []op{
		{30, func() { w.newSale(false) }},
		{8, func() { w.newSale(true) }}, // blank reference
		{8, w.reask},
		{4, w.reuseReference},
		{3, w.repeatTaken},
		{8, w.keypadSale},
		{8, w.newRefund},
		{3, w.retryRefund},
		{3, w.clockStep},
		{4, w.crash},
		{8, w.idle},
	}
	total := 0
	for _, o := range ops {
		total += o.weight
	}
	for i := 0; i < steps; i++ {
		w.steps++
		n := w.rng.IntN(total)
		for _, o := range ops {
			if n < o.weight {
				o.do()
				break
			}
			n -= o.weight
		}
	}
	w.drain()
	w.finalSale()
	if err := w.lane.link.Health(); err != nil {
		w.t.Errorf("seed %d: the register link is not healthy at the end: %v", w.seed, err)
	}
	w.stop()
	w.check()
	w.checkRefundable()
}

// newSale makes a register sale request with a fresh (or blank) reference.
func (w *world) newSale(blank bool) {
	w.saleNo++
	ref := ""
	if !blank {
		w.refSeq++
		ref = fmt.Sprintf("INV%05d", w.refSeq)
	}
	r := &request{id: len(w.requests), req: ecr.Request{POS: "01", Amount: w.amount(), FullAnswer: w.rng.IntN(2) == 0, Mode: '1',
		Type: ecr.TypePurchase, Currency: "124", Private: pad(ref), Immediate: w.rng.IntN(3) == 0}}
	if w.rng.IntN(5) == 0 {
		r.req.Type = ecr.TypeAutomatic
	}
	w.requests = append(w.requests, r)
	w.attempt(r)
}

// reask sends again a request whose answer the register did not get (or
// got as "not verified"), the way registers do.
func (w *world) reask() {
	var open []*request
	for _, r := range w.requests {
		if !r.refund && r.req.Ref() != "" && !r.final() && w.mayReask(r) {
			open = append(open, r)
		}
	}
	if len(open) == 0 {
		w.newSale(false)
		return
	}
	r := open[w.rng.IntN(len(open))]
	r.req.Immediate = w.rng.IntN(3) == 0
	r.req.FullAnswer = w.rng.IntN(2) == 0
	w.attempt(r)
}

// reuseReference is a register whose receipt counter restarted: an old
// reference for another amount.
func (w *world) reuseReference() {
	var named []*request
	for _, r := range w.requests {
		if !r.refund && r.req.Ref() != "" {
			named = append(named, r)
		}
	}
	if len(named) == 0 {
		w.newSale(false)
		return
	}
	old := named[w.rng.IntN(len(named))]
	amount := w.amount()
	for amount == old.req.Amount {
		amount = w.amount()
	}
	r := &request{id: len(w.requests), req: old.req}
	r.req.Amount, r.req.Immediate = amount, false
	for _, other := range w.requests {
		if !other.refund && other.key() == r.key() {
			return // that exact request exists: not a new one
		}
	}
	w.requests = append(w.requests, r)
	w.attempt(r)
}

// repeatTaken is a register whose references repeat: a sale it has the
// final answer for, sent again as a new sale (same reference, amount, POS
// and type). It must be a new sale — within the window, after a restart,
// after a clock step — never the old sale's answer.
func (w *world) repeatTaken() {
	var done []*request
	for _, r := range w.requests {
		if !r.refund && r.req.Ref() != "" && r.final() {
			done = append(done, r)
		}
	}
	if len(done) == 0 {
		w.newSale(false)
		return
	}
	old := done[w.rng.IntN(len(done))]
	for _, other := range w.requests {
		if !other.refund && other.key() == old.key() && !other.final() {
			return // that request is still waiting for its answer: a re-ask, not a repeat
		}
	}
	r := &request{id: len(w.requests), req: old.req}
	r.req.Immediate = false
	w.requests = append(w.requests, r)
	w.attempt(r)
}

// newRefund asks for part of an approved sale back.
func (w *world) newRefund() {
	var paid []*request
	for _, r := range w.requests {
		if !r.refund && r.approved() {
			paid = append(paid, r)
		}
	}
	if len(paid) == 0 {
		w.idle()
		return
	}
	sale := paid[w.rng.IntN(len(paid))]
	amount := 1 + w.rng.Int64N(sale.req.Amount)
	if w.rng.IntN(3) == 0 {
		// The same amount as a refund the register already has the answer
		// for, under the same reference: a new refund (of this sale or of
		// a later one the reference, blank or reused, now names).
		for _, other := range w.requests {
			if other.refund && other.req.Ref() == sale.req.Ref() && other.final() {
				amount = other.req.Amount
			}
		}
	}
	r := &request{id: len(w.requests), refund: true, req: ecr.Request{POS: "01", Amount: amount, Mode: '1',
		Type: ecr.TypeRefund, Currency: "124", Private: sale.req.Private, FullAnswer: w.rng.IntN(2) == 0}}
	for _, other := range w.requests {
		if other.refund && other.key() == r.key() && !other.final() {
			return // that refund still waits for its answer: the same request is a retry
		}
	}
	w.requests = append(w.requests, r)
	w.attempt(r)
}

// retryRefund sends again a refund whose answer the register missed.
func (w *world) retryRefund() {
	var open []*request
	for _, r := range w.requests {
		// A blank reference names no sale: only a prompt retry can be
		// told from a new refund (within ecr.refund_window).
		if r.refund && !r.final() && (r.req.Ref() != "" || w.mayReask(r)) {
			open = append(open, r)
		}
	}
	if len(open) == 0 {
		w.newRefund()
		return
	}
	w.attempt(open[w.rng.IntN(len(open))])
}

// attempt sends r once and plays the customer and the register until the
// lane settles.
func (w *world) attempt(r *request) {
	w.waitIdle(3 * time.Minute)
	a := attempt{seqBefore: w.maxSeq(), refundsBefore: w.refundCount()}
	start, offset, crashes := time.Now(), w.offset.Load(), w.crashes
	reg := w.connect()
	a.taken = reg.send(r.req)
	r.missed = true
	if a.taken {
		settle()
		if r.req.Immediate && !r.refund {
			// A011: at once, "not verified" while the sale runs (or the
			// journal's answer when this is the register asking again).
			w.take(r, 10*time.Second)
			if r.last() == ecr.StatusNotVerified {
				r.missed = true // the outcome is still to come
			}
		}
		settle()
		crashed := false
		if w.lane.term.State() == payment.StateAwaitingCode {
			// Crashed mid-sale: the register never hears back.
			crashed = w.customer()
		}
		if !crashed && (!r.req.Immediate || r.refund) {
			w.take(r, 130*time.Second)
		}
	}
	w.waitIdle(5 * time.Minute)
	a.seqAfter, a.refundsAfter = w.maxSeq(), w.refundCount()
	r.attempts = append(r.attempts, a)
	if a.taken {
		// Only a request the link took refreshes its window.
		r.lastAt, r.lastOffset, r.lastCrash = start, offset, crashes
	}
	if a.seqAfter > a.seqBefore {
		r.orderAt, r.orderOffset = start, offset
	}
}

// mayReask reports whether the register may send r again as the same
// request: inside the window, as a register that missed an answer does
// within minutes. Past it the reference is free again, and the same
// request would be a new sale by the rules.
//
// Within one life of the lane the link measures the window on the
// monotonic clock from the register's latest question; after a restart it
// has only the order's wall-clock time, so a clock step or the time since
// the order was made decide.
func (w *world) mayReask(r *request) bool {
	const window = 8 * time.Minute // inside ecr.keep_results (10 min)
	if r.lastCrash == w.crashes {
		return time.Since(r.lastAt) <= window
	}
	if r.orderAt.IsZero() {
		return time.Since(r.lastAt) <= window && r.lastOffset == w.offset.Load()
	}
	return time.Since(r.orderAt) <= window && r.orderOffset == w.offset.Load()
}

// take waits for a result and takes it, or misses it as registers do.
func (w *world) take(r *request, wait time.Duration) {
	kind := takeIt
	if n := w.rng.IntN(10); n == 0 {
		kind = ignoreENQ
	} else if n == 1 {
		kind = []missKind{nakFrames, dropOffENQ, resetLine}[w.rng.IntN(3)]
	}
	reg := w.connect()
	reg.resetAfter = []time.Duration{0, 2 * time.Second}[w.rng.IntN(2)]
	res, got := reg.receive(wait, r.req.FullAnswer, kind)
	if !got {
		r.missed = true
		return
	}
	r.missed = false
	r.answers = append(r.answers, res.Status)
	w.frames = append(w.frames, res.Report+res.Private)
	if res.Amount != r.req.Amount || res.POS != r.req.POS || res.Private != r.req.Private || res.Currency != r.req.Currency {
		w.t.Errorf("seed %d: request %d (%s) answered for another request: %+v", w.seed, r.id, r.key(), res)
	}
}

// customer scans, sometimes badly; it reports true when the lane crashed
// meanwhile (a new lane is running).
func (w *world) customer() bool {
	ctx := context.Background()
	term := w.lane.term
	if w.rng.IntN(20) == 0 {
		// The power goes while the amount is armed: its order is on disk,
		// no code yet.
		time.Sleep(time.Duration(w.rng.IntN(5000)) * time.Millisecond)
		w.crash()
		return true
	}
	switch n := w.rng.IntN(20); {
	case n == 0:
		time.Sleep(3 * time.Minute) // walks away: the amount times out
		return false
	case n <= 2:
		term.Scan(ctx, payment.Code{Text: "ABC-123", Source: "sim"})
	case n <= 4 && len(w.codes) > 0:
		term.Scan(ctx, payment.Code{Text: w.codes[w.rng.IntN(len(w.codes))], Source: "sim"})
	}
	settle()
	code := w.newCode()
	if w.rng.IntN(20) == 0 && term.State() == payment.StateAwaitingCode {
		// The disk fails while create_order flies, before the code's link
		// is written: the lane stops (as the daemon exits), systemd starts
		// it again, and recovery asks the gateway.
		w.failAttach.Store(true)
		term.Scan(ctx, payment.Code{Text: code, Source: "sim"})
		w.restartAfterFailure()
		return true
	}
	term.Scan(ctx, payment.Code{Text: code, Source: "sim"})
	if w.rng.IntN(20) == 0 {
		term.Scan(ctx, payment.Code{Text: code, Source: "sim"}) // scanned twice
	}
	if w.rng.IntN(12) == 0 {
		// The power goes while the order is at the gateway.
		time.Sleep(time.Duration(w.rng.IntN(5000)) * time.Millisecond)
		w.crash()
		return true
	}
	return false
}

// keypadSale is a cashier typing the amount.
func (w *world) keypadSale() {
	if !w.waitIdle(3 * time.Minute) {
		return
	}
	if err := w.lane.term.RequestSale(context.Background(), payment.SaleRequest{Amount: w.amount(), Source: payment.SourceKeypad}); err != nil {
		return
	}
	settle()
	if !w.customer() {
		w.waitIdle(5 * time.Minute)
	}
}

func (w *world) clockStep() {
	steps := []time.Duration{24 * time.Hour, -24 * time.Hour, time.Hour, -time.Hour}
	if w.rng.IntN(3) == 0 {
		w.offset.Store(0) // NTP puts it right
		return
	}
	w.offset.Add(int64(steps[w.rng.IntN(len(steps))]))
}

func (w *world) idle() {
	d := time.Duration(10+w.rng.IntN(1200)) * time.Second
	if w.rng.IntN(10) == 0 {
		d = 2 * time.Hour
	}
	time.Sleep(d)
}

// drain stops the faults and lets the lane and its reconciler finish.
func (w *world) drain() {
	w.faults.Store(false)
	w.clockOK.Store(true)
	for i := 0; i < 300; i++ {
		time.Sleep(10 * time.Minute)
		settle()
		if w.quiet() {
			return
		}
	}
}

// quiet reports whether nothing is left for the lane to settle.
func (w *world) quiet() bool {
	ctx := context.Background()
	if w.lane.term.State() != payment.StateIdle {
		return false
	}
	open, err := w.lane.jr.OpenOrders(ctx)
	if err != nil {
		w.t.Fatalf("seed %d: %v", w.seed, err)
	}
	for _, o := range open {
		if o.State.Open() && !unverifiable(o.Amount) && !w.misbooked(o.MchOrderNo) {
			return false
		}
	}
	refunds, _ := w.lane.jr.Refunds(ctx, "")
	for _, r := range refunds {
		if r.State == "SENT" {
			return false
		}
	}
	return true
}

// finalSale proves the lane still sells after all that.
func (w *world) finalSale() {
	w.refSeq++
	r := &request{id: len(w.requests), req: ecr.Request{POS: "01", Amount: 4200, FullAnswer: true, Mode: '1', Type: ecr.TypePurchase,
		Currency: "124", Private: pad(fmt.Sprintf("FIN%05d", w.refSeq))}}
	w.requests = append(w.requests, r)
	if !w.waitIdle(time.Hour) {
		w.t.Fatalf("seed %d: the lane is not idle after the drain (%s)", w.seed, w.lane.term.State())
	}
	a := attempt{seqBefore: w.maxSeq(), refundsBefore: w.refundCount()}
	a.taken = w.connect().send(r.req)
	if !a.taken {
		w.t.Fatalf("seed %d: the lane refused a sale after the drain", w.seed)
	}
	settle()
	w.lane.term.Scan(context.Background(), payment.Code{Text: w.newCode(), Source: "sim"})
	res, got := w.connect().receive(130*time.Second, true, takeIt)
	if !got || res.Status != ecr.StatusApproved {
		w.t.Fatalf("seed %d: the final sale was not approved: %+v (got %v)", w.seed, res, got)
	}
	r.answers = append(r.answers, res.Status)
	w.frames = append(w.frames, res.Report+res.Private)
	w.waitIdle(time.Minute)
	a.seqAfter, a.refundsAfter = w.maxSeq(), w.refundCount()
	r.attempts = append(r.attempts, a)
}

func pad(ref string) string { return fmt.Sprintf("%-10s", ref) }

// unverifiable: the simulator signs every reply about these amounts with
// the wrong key (scenario 59), so the lane can never trust an answer about
// them; they stay open for the operator whatever happens.
func unverifiable(amount int64) bool { return amount%100 == 59 }

// misbooked: the gateway booked this order for another amount or currency
// (a Misbook fault); no answer about it can approve the sale, so it stays
// open for the operator.
func (w *world) misbooked(no string) bool {
	g, ok := w.sim.Order(no)
	if !ok {
		return false
	}
	o, err := w.lane.jr.Get(context.Background(), no)
	return err == nil && (g.Amount != o.Amount || g.Currency != o.Currency)
}
