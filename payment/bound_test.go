package payment_test

import (
	"context"
	"errors"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"go.uber.org/zap/zaptest"

	"github.com/scanpay/scanpay/payment"
	"github.com/scanpay/scanpay/payment/iotpay"
	"github.com/scanpay/scanpay/payment/iotpaysim"
	"github.com/scanpay/scanpay/payment/journal"
)

// alerts counts Observer.Alert calls.
type alerts struct {
	mu    sync.Mutex
	kinds map[string]int
}

func (a *alerts) SaleFinished(string, journal.State)                {}
func (a *alerts) ScanRejected(string)                               {}
func (a *alerts) GatewayCall(string, iotpay.Outcome, time.Duration) {}
func (a *alerts) OutputFailed(string)                               {}
func (a *alerts) count(kind string) int                             { a.mu.Lock(); defer a.mu.Unlock(); return a.kinds[kind] }
func (a *alerts) Alert(kind string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.kinds == nil {
		a.kinds = map[string]int{}
	}
	a.kinds[kind]++
}

// faultsFor installs a simulator fault for one endpoint while on is true.
func faultsFor(h *harness, endpoint string, f iotpaysim.Fault, on *atomic.Bool) {
	h.sim.SetFaults(func(ep string, _ map[string]string) iotpaysim.Fault {
		if ep == endpoint && on.Load() {
			return f
		}
		return iotpaysim.Fault{}
	})
}

// A gateway that refuses every query request (0011–0015) while the customer
// pays: the sale is "not confirmed", never declined; once queries work
// again the reconciler finds the payment and refunds it.
func TestRefusedQueriesNeverDecline(t *testing.T) {
	for _, code := range []string{"0011", "0012", "0013", "0014", "0015", "0010", "0110"} {
		t.Run(code, func(t *testing.T) {
			var on atomic.Bool
			on.Store(true)
			h := newHarness(t, withConfig(func(c *payment.Config) { c.RefundLate = true }))
			faultsFor(h, "query_order", iotpaysim.Fault{Refuse: code}, &on)
			r := h.sale(1052, h.code()) // paid on the 3rd query the gateway answers
			if r.Outcome != payment.OutcomeUnknown {
				t.Fatalf("refused queries gave %+v", r)
			}
			h.eventually("UNCONFIRMED on disk", func() bool { return h.order(r.MchOrderNo).State == journal.StateUnconfirmed })
			on.Store(false)
			h.eventually("late payment refunded", func() bool {
				o := h.order(r.MchOrderNo)
				return o.State == journal.StateLatePaid && o.Refunded == o.Amount
			})
			if h.rec.sawScreen(payment.ScreenDeclined) {
				t.Fatal("the customer was told declined")
			}
			h.agree()
		})
	}
}

// A signed "paid" whose amount, currency or order number is not the
// order's is unknown, alerted, and never approved.
func TestLyingPaidReplyNeverApproves(t *testing.T) {
	for name, lie := range map[string]iotpaysim.Lie{"amount": iotpaysim.LieAmount, "currency": iotpaysim.LieCurrency, "order": iotpaysim.LieOrder} {
		t.Run(name, func(t *testing.T) {
			var on atomic.Bool
			on.Store(true)
			obs := &alerts{}
			h := newHarness(t, withObserver(obs))
			faultsFor(h, "query_order", iotpaysim.Fault{Lie: lie}, &on)
			r := h.sale(1000, h.code())
			if r.Outcome == payment.OutcomeApproved || h.rec.sawScreen(payment.ScreenApproved) {
				t.Fatalf("a lying reply approved the sale: %+v", r)
			}
			h.eventually("UNCONFIRMED on disk", func() bool { return h.order(r.MchOrderNo).State == journal.StateUnconfirmed })
			if name != "order" && obs.count(payment.AlertReplyMismatch) == 0 {
				t.Fatal("no alert for a mismatching reply")
			}
			on.Store(false)
			h.eventually("the true reply settles it", func() bool { return h.order(r.MchOrderNo).State == journal.StateLatePaid })
		})
	}
}

// IOTPay's query reply does not carry payOrderId: the id from create's
// reply must be kept, so the sale can be refunded.
func TestPayOrderIDKeptFromAnyReply(t *testing.T) {
	var on atomic.Bool
	on.Store(true)
	h := newHarness(t)
	faultsFor(h, "query_order", iotpaysim.Fault{NoPayOrderID: true}, &on)
	r := h.sale(1052, h.code()) // create pending (with payOrderId), paid on a query without it
	h.eventually("PAID on disk", func() bool { return h.order(r.MchOrderNo).State == journal.StatePaid })
	o := h.order(r.MchOrderNo)
	so, _ := h.sim.Order(r.MchOrderNo)
	if o.State != journal.StatePaid || o.PayOrderID != so.PayOrderID || o.PayOrderID == "" {
		t.Fatalf("paid order recorded without IOTPay's id: %+v", o)
	}
	if rf, err := h.term.Refund(context.Background(), payment.RefundRequest{ID: r.MchOrderNo}); err != nil || rf.State != journal.RefundDone {
		t.Fatalf("refund: %+v %v", rf, err)
	}
}

// A paid order whose id was never seen is repaired by one query at refund
// time, and `scanpay query` (the same rule) refreshes a settled order.
func TestRefundRepairsMissingPayOrderID(t *testing.T) {
	var on atomic.Bool
	on.Store(true)
	h := newHarness(t)
	h.sim.SetFaults(func(ep string, _ map[string]string) iotpaysim.Fault {
		if on.Load() {
			return iotpaysim.Fault{NoPayOrderID: true}
		}
		return iotpaysim.Fault{}
	})
	r := h.sale(1000, h.code())
	h.eventually("PAID on disk", func() bool { return h.order(r.MchOrderNo).State == journal.StatePaid })
	if o := h.order(r.MchOrderNo); o.State != journal.StatePaid || o.PayOrderID != "" {
		t.Fatalf("setup: %+v", o)
	}
	ctx := context.Background()
	if _, err := h.term.Refund(ctx, payment.RefundRequest{ID: r.MchOrderNo}); err == nil {
		t.Fatal("refund without IOTPay's id went through")
	}
	if n := len(h.sim.Refunds()); n != 0 {
		t.Fatalf("%d refunds sent", n)
	}
	on.Store(false)
	rf, err := h.term.Refund(ctx, payment.RefundRequest{ID: r.MchOrderNo})
	if err != nil || rf.State != journal.RefundDone {
		t.Fatalf("refund after repair: %+v %v", rf, err)
	}
	if o := h.order(r.MchOrderNo); o.PayOrderID == "" || o.State != journal.StatePaid {
		t.Fatalf("id not recorded: %+v", o)
	}
}

// A paid create_order reply is outside the signature: one signed query
// confirms it before "Approved"; if that query is unknown the sale is not
// approved on the create reply alone.
func TestPaidCreateConfirmedByQuery(t *testing.T) {
	var on atomic.Bool
	on.Store(true)
	h := newHarness(t, withConfig(func(c *payment.Config) { c.PollAttempts = 3 }))
	faultsFor(h, "query_order", iotpaysim.Fault{HTTPStatus: 502}, &on)
	r := h.sale(1000, h.code()) // paid at once in the create reply
	if r.Outcome == payment.OutcomeApproved {
		t.Fatal("approved on the create reply's unsigned status")
	}
	h.eventually("UNCONFIRMED on disk", func() bool { return h.order(r.MchOrderNo).State == journal.StateUnconfirmed })
	on.Store(false)
	r2 := h.sale(1001, h.code())
	if r2.Outcome != payment.OutcomeApproved || h.sim.OrderRequests("query_order", r2.MchOrderNo) != 1 {
		t.Fatalf("paid create: %+v after %d queries", r2, h.sim.OrderRequests("query_order", r2.MchOrderNo))
	}
}

func withObserver(o payment.Observer) option { return func(h *harness) { h.obs = o } }

// engine runs a terminal in a synctest bubble with a fake gateway and a
// wall clock the test can step.
type engine struct {
	t      *testing.T
	gw     *fakeGateway
	jr     *journal.Journal
	term   *payment.Terminal
	rec    *recorder
	offset atomic.Int64 // wall clock offset, ns
	cancel context.CancelFunc
	done   chan error
}

func startEngine(t *testing.T, gw *fakeGateway, cfg payment.Config, synced func() (bool, error)) *engine {
	e := &engine{t: t, gw: gw, rec: newRecorder(), done: make(chan error, 1)}
	wall := func() time.Time { return time.Now().Round(0).Add(time.Duration(e.offset.Load())) }
	var err error
	e.jr, err = journal.Open(filepath.Join(t.TempDir(), "j.db"), journal.Options{Now: wall})
	if err != nil {
		t.Fatal(err)
	}
	wallets, _ := payment.NewWallets(payment.DefaultWalletRules())
	e.term, err = payment.New(cfg, payment.Deps{Gateway: gw, Journal: e.jr, Wallets: wallets, Screen: e.rec, Beeper: e.rec, Results: e.rec,
		Logger: zaptest.NewLogger(t), Now: wall, ClockSynced: synced})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	e.cancel = cancel
	go func() { e.done <- e.term.Run(ctx) }()
	return e
}

func (e *engine) stop() {
	e.cancel()
	if err := <-e.done; err != nil {
		e.t.Fatal(err)
	}
	e.jr.Close()
}

// The wall clock is a day behind when the order is made (a Pi without
// RTC, before NTP), then NTP corrects it: the reconciler still queries the
// order, finds it paid, and keeps it for refund; nothing is dropped
// unqueried.
func TestClockStepKeepsOrdersFollowed(t *testing.T) {
	for _, step := range []time.Duration{24 * time.Hour, -24 * time.Hour} {
		t.Run(step.String(), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				var paidAt atomic.Int64
				gw := &fakeGateway{create: pending(), query: func(n int) iotpay.Result {
					if p := paidAt.Load(); p > 0 && int64(n) >= p {
						return paid(2865, 2)
					}
					return pending()
				}}
				cfg := payment.DefaultConfig()
				e := startEngine(t, gw, cfg, nil)
				e.offset.Store(int64(-step))
				<-e.term.Ready()
				e.term.RequestSale(context.Background(), payment.SaleRequest{Amount: 2865})
				e.term.Scan(context.Background(), payment.Code{Text: "134567890123456789"})
				if r := <-e.rec.resCh; r.Outcome != payment.OutcomeUnknown {
					t.Fatalf("%+v", r)
				}
				e.offset.Store(0) // NTP steps the clock by a day
				before := len(gw.queries())
				paidAt.Store(int64(before + 3))
				time.Sleep(30 * time.Minute)
				synctest.Wait()
				if len(gw.queries()) <= before {
					t.Fatal("the order was dropped without a query after the clock step")
				}
				open, _ := e.jr.OpenOrders(context.Background())
				if len(open) != 1 || open[0].State != journal.StateLatePaid {
					t.Fatalf("open orders %+v", open)
				}
				e.stop()
			})
		})
	}
}

// The reconciler gives up only after its window on the monotonic clock,
// and always after one last query.
func TestReconcilerLastQueryOnMonotonicClock(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		gw := &fakeGateway{create: pending(), query: func(int) iotpay.Result { return pending() }}
		cfg := payment.DefaultConfig()
		cfg.ReconcileFor = time.Hour
		e := startEngine(t, gw, cfg, nil)
		<-e.term.Ready()
		e.term.RequestSale(context.Background(), payment.SaleRequest{Amount: 2865})
		e.term.Scan(context.Background(), payment.Code{Text: "134567890123456789"})
		<-e.rec.resCh
		handedOver := time.Now()
		e.offset.Store(int64(48 * time.Hour)) // the wall clock jumps two days ahead
		time.Sleep(3 * time.Hour)
		synctest.Wait()
		qs := gw.queries()
		last := qs[len(qs)-1]
		if got := last.Sub(handedOver); got < cfg.ReconcileFor || got > cfg.ReconcileFor+cfg.ReconcileMax {
			t.Fatalf("last query %v after the hand-over, want the window's end (%v)", got, cfg.ReconcileFor)
		}
		if len(qs) < cfg.PollAttempts+4 {
			t.Fatalf("only %d queries", len(qs))
		}
		e.stop()
	})
}

// A sale's gateway phase is capped: queries that each take the client's
// whole timeout end the sale at SaleLimit, not after attempts × (interval +
// timeout).
func TestSaleLimit(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		slow := func(ctx context.Context) iotpay.Result {
			<-ctx.Done() // a gateway that never answers within the call
			return iotpay.Result{Outcome: iotpay.OutcomeUnknown, Status: -1, Amount: -1, Err: &iotpay.Error{Msg: "gateway timeout"}}
		}
		gw := &fakeGateway{create: pending(), query: func(int) iotpay.Result { return pending() }, block: slow}
		cfg := payment.DefaultConfig()
		cfg.SaleLimit = 90 * time.Second
		e := startEngine(t, gw, cfg, nil)
		<-e.term.Ready()
		start := time.Now()
		e.term.RequestSale(context.Background(), payment.SaleRequest{Amount: 2865})
		e.term.Scan(context.Background(), payment.Code{Text: "134567890123456789"})
		r := <-e.rec.resCh
		if took := time.Since(start); r.Outcome != payment.OutcomeUnknown || took != cfg.SaleLimit {
			t.Fatalf("result %+v after %v, want unknown after %v", r, took, cfg.SaleLimit)
		}
		synctest.Wait() // the loop frees the lane just after it hands the result over
		if st := e.term.State(); st != payment.StateIdle {
			t.Fatalf("lane %s after the limit", st)
		}
		e.stop()
	})
}

// With an unsynchronised clock the lane takes no sale and says why; once
// the clock is synchronised it does.
func TestWaitsForClock(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var synced atomic.Bool
		gw := &fakeGateway{create: pending(), query: func(int) iotpay.Result { return paid(2865, 2) }}
		e := startEngine(t, gw, payment.DefaultConfig(), func() (bool, error) { return synced.Load(), nil })
		<-e.term.Ready() // READY comes: the process is healthy and says why it waits
		synctest.Wait()
		if st := e.term.State(); st != payment.StateWaitingClock {
			t.Fatalf("lane %s", st)
		}
		if err := e.term.RequestSale(context.Background(), payment.SaleRequest{Amount: 2865}); !errors.Is(err, payment.ErrNoClock) {
			t.Fatalf("sale while waiting for the clock: %v", err)
		}
		if !e.rec.sawScreen(payment.ScreenWaitingClock) {
			t.Fatal("the display does not say why")
		}
		synced.Store(true)
		time.Sleep(2 * time.Second)
		synctest.Wait()
		if err := e.term.RequestSale(context.Background(), payment.SaleRequest{Amount: 2865}); err != nil {
			t.Fatalf("sale after sync: %v", err)
		}
		e.term.Scan(context.Background(), payment.Code{Text: "134567890123456789"})
		if r := <-e.rec.resCh; r.Outcome != payment.OutcomeApproved {
			t.Fatalf("%+v", r)
		}
		e.stop()
	})
}

// An order an operator's `scanpay query` moved to LATE_PAID (another
// process) is refunded by the daemon's reconciler.
func TestReconcilerRefundsLatePaidFromOutside(t *testing.T) {
	h := newHarness(t, withConfig(func(c *payment.Config) { c.RefundLate = true; c.ReconcileRescan = 20 * time.Millisecond }))
	h.ready()
	ctx := context.Background()
	// An unconfirmed order the daemon's reconciler is not following (it
	// gave up on it, say), paid at the gateway.
	code := h.code()
	h.client.CreateOrder(ctx, iotpay.CreateRequest{MchOrderNo: "T01-X1", ChannelID: "WX_MICROPAY", Currency: "CAD", Amount: 700, IdentityCode: code})
	other, err := journal.Open(h.jpath, journal.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	o, err := other.AddOrder(ctx, journal.NewOrder{TerminalID: "T01", Amount: 700, Currency: "CAD", Channel: "WX_MICROPAY", CodeMasked: "13**",
		CodeHash: "h-x1", Source: "keypad"}, func(uint64) string { return "T01-X1" })
	if err != nil {
		t.Fatal(err)
	}
	so, _ := h.sim.Order("T01-X1")
	if _, err := other.Transition(ctx, o.MchOrderNo, journal.StateSubmitting, journal.StateUnconfirmed, journal.Update{Status: -1}); err != nil {
		t.Fatal(err)
	}
	// The operator's query finds it paid.
	if _, err := other.Transition(ctx, o.MchOrderNo, journal.StateUnconfirmed, journal.StateLatePaid, journal.Update{PayOrderID: so.PayOrderID, Status: 2}); err != nil {
		t.Fatal(err)
	}
	h.eventually("the daemon refunds it", func() bool { return h.order(o.MchOrderNo).Refunded == 700 })
	if n := len(h.sim.Refunds()); n != 1 {
		t.Fatalf("%d refunds", n)
	}
}

// Register refunds: journaled with the register's reference; the same
// refund asked again is answered from the journal, never sent twice; a
// blank reference names the last paid sale only within the window.
func TestRegisterRefunds(t *testing.T) {
	h := newHarness(t, withConfig(func(c *payment.Config) { c.RefundWindow = time.Minute }))
	ctx := context.Background()
	r := h.sale(1000, h.code()) // reference REF1000
	req := payment.ECRRefund{Ref: "REF1000", Amount: 400, Currency: "CAD"}
	first := h.term.RefundForECR(ctx, req)
	if first.Outcome != payment.OutcomeApproved || first.MchOrderNo != r.MchOrderNo {
		t.Fatalf("refund %+v", first)
	}
	again := h.term.RefundForECR(ctx, req)
	if again.Outcome != payment.OutcomeApproved {
		t.Fatalf("retry %+v", again)
	}
	if n := len(h.sim.Refunds()); n != 1 {
		t.Fatalf("a retried refund reached the gateway %d times", n)
	}
	// Another amount on the same sale is a new partial refund.
	if res := h.term.RefundForECR(ctx, payment.ECRRefund{Ref: "REF1000", Amount: 600, Currency: "CAD"}); res.Outcome != payment.OutcomeApproved {
		t.Fatalf("second partial refund %+v", res)
	}
	// Nothing left: refused, nothing sent.
	if res := h.term.RefundForECR(ctx, payment.ECRRefund{Ref: "REF1000", Amount: 1, Currency: "CAD"}); res.Outcome != payment.OutcomeRefused {
		t.Fatalf("over-refund %+v", res)
	}
	if res := h.term.RefundForECR(ctx, payment.ECRRefund{Ref: "NOPE", Amount: 1, Currency: "CAD"}); res.Outcome != payment.OutcomeRefused {
		t.Fatalf("unknown reference %+v", res)
	}
	if res := h.term.RefundForECR(ctx, payment.ECRRefund{Ref: "REF1000", Amount: 1, Currency: "USD"}); res.Outcome != payment.OutcomeRefused {
		t.Fatalf("another currency %+v", res)
	}
	if n := len(h.sim.Refunds()); n != 2 {
		t.Fatalf("%d refunds at the gateway", n)
	}
	// Blank reference: the last paid sale, while recent.
	r2 := h.sale(2000, h.code())
	if res := h.term.RefundForECR(ctx, payment.ECRRefund{Amount: 2000, Currency: "CAD"}); res.Outcome != payment.OutcomeApproved || res.MchOrderNo != r2.MchOrderNo {
		t.Fatalf("blank-reference refund %+v", res)
	}
	if res := h.term.RefundForECR(ctx, payment.ECRRefund{Amount: 2000, Currency: "CAD"}); res.Outcome != payment.OutcomeApproved {
		t.Fatalf("blank-reference retry %+v", res)
	}
	if n := len(h.sim.Refunds()); n != 3 {
		t.Fatalf("%d refunds at the gateway, want 3", n)
	}
}

// Once a refund was sent, a failure answers "not verified", never
// "refused": a lost reply, or an outcome the journal could not record.
func TestRegisterRefundNeverRefusedAfterSending(t *testing.T) {
	var lose atomic.Bool
	h := newHarness(t, withGateway(func(h *harness) payment.Gateway {
		return &scriptGateway{Gateway: h.client, refund: func(ctx context.Context, r iotpay.RefundRequest) (iotpay.Result, bool) {
			if lose.Load() {
				h.client.RefundOrder(ctx, r)
				return iotpay.Result{Outcome: iotpay.OutcomeUnknown, Status: -1, Err: &iotpay.Error{Op: "refund_order", Msg: "gateway timeout"}}, true
			}
			return iotpay.Result{}, false
		}}
	}))
	ctx := context.Background()
	h.sale(1000, h.code())
	lose.Store(true)
	req := payment.ECRRefund{Ref: "REF1000", Amount: 1000, Currency: "CAD"}
	if res := h.term.RefundForECR(ctx, req); res.Outcome != payment.OutcomeUnknown {
		t.Fatalf("lost refund reply answered %+v", res)
	}
	lose.Store(false)
	// Asked again: the journal says UNKNOWN; still "not verified", and the
	// refund is not sent again (before the fix: "nothing left", refused).
	if res := h.term.RefundForECR(ctx, req); res.Outcome != payment.OutcomeUnknown {
		t.Fatalf("retry answered %+v", res)
	}
	if n := len(h.sim.Refunds()); n != 1 {
		t.Fatalf("%d refunds", n)
	}
}

// Typing past the maximum shows the limit with a beep.
func TestTypingOverLimit(t *testing.T) {
	h := newHarness(t, withConfig(func(c *payment.Config) { c.MaxAmount = 5000 }))
	h.ready()
	h.term.Typing(context.Background(), 50001)
	h.eventually("over-limit screen", func() bool { return h.rec.sawScreen(payment.ScreenOverLimit) && h.rec.sawBeep(payment.BeepDeclined) })
	if err := h.term.RequestSale(context.Background(), payment.SaleRequest{Amount: 50001}); !errors.Is(err, payment.ErrBadAmount) {
		t.Fatalf("over-limit sale: %v", err)
	}
}

// slowCommit holds the lane's commit of a final state until released.
type slowCommit struct {
	payment.Journal
	hold    chan struct{}
	holding chan struct{}
}

// Settle is the commit of a sale's outcome.
func (s *slowCommit) Settle(ctx context.Context, no string, from, to journal.State, u journal.Update) (journal.Order, error) {
	if !to.Open() {
		close(s.holding)
		<-s.hold
	}
	return s.Journal.Settle(ctx, no, from, to, u)
}

// The result goes out before its commit; a register that refunds (or asks
// again) the instant it hears "approved" waits for that commit instead of
// being refused because the order still reads SUBMITTING.
func TestRefundRightAfterApprovalWaitsForCommit(t *testing.T) {
	sc := &slowCommit{hold: make(chan struct{}), holding: make(chan struct{})}
	var release sync.Once
	h := newHarness(t, withJournal(func(j payment.Journal) payment.Journal { sc.Journal = j; return sc }))
	t.Cleanup(func() { release.Do(func() { close(sc.hold) }) }) // runs before the harness stops
	ctx := context.Background()
	h.ready()
	if err := h.term.RequestSale(ctx, payment.SaleRequest{Amount: 1000, Source: payment.SourceECR, ECRRef: "REF1000"}); err != nil {
		t.Fatal(err)
	}
	if err := h.term.Scan(ctx, payment.Code{Text: h.code(), Source: "test", At: time.Now()}); err != nil {
		t.Fatal(err)
	}
	r := h.resultNow()
	if r.Outcome != payment.OutcomeApproved {
		t.Fatalf("sale %+v", r)
	}
	<-sc.holding // the result is out, its commit not yet made
	refund := make(chan payment.SaleResult, 1)
	go func() {
		refund <- h.term.RefundForECR(ctx, payment.ECRRefund{Ref: "REF1000", Amount: 1000, Currency: "CAD"})
	}()
	last := make(chan payment.SaleResult, 1)
	go func() { res, _ := h.term.LastResult(ctx, "REF1000"); last <- res }()
	select {
	case res := <-refund:
		t.Fatalf("refund answered before the sale was on disk: %+v", res)
	case res := <-last:
		t.Fatalf("re-ask answered before the sale was on disk: %+v", res)
	case <-time.After(50 * time.Millisecond):
	}
	release.Do(func() { close(sc.hold) })
	if res := <-refund; res.Outcome != payment.OutcomeApproved || res.MchOrderNo != r.MchOrderNo {
		t.Fatalf("refund %+v", res)
	}
	if res := <-last; res.Outcome != payment.OutcomeApproved || !res.Final {
		t.Fatalf("re-ask %+v", res)
	}
}

// A refund the register took the answer of is never the answer to the
// next request: two sales of the same amount, each refunded with a blank
// reference (or a reused one), are two refunds. Until the register takes
// an answer, the same request again is a retry; if the request now names
// another sale, nothing is sent and the answer is "not verified".
func TestRegisterRefundsOfTwoSales(t *testing.T) {
	for _, ref := range []string{"", "INV9"} {
		t.Run("ref="+ref, func(t *testing.T) {
			h := newHarness(t, withConfig(func(c *payment.Config) { c.RefundWindow = 10 * time.Minute }))
			ctx := context.Background()
			sale := func() payment.SaleResult {
				h.ready()
				if err := h.term.RequestSale(ctx, payment.SaleRequest{Amount: 2000, Source: payment.SourceECR, ECRRef: ref}); err != nil {
					t.Fatal(err)
				}
				if err := h.term.Scan(ctx, payment.Code{Text: h.code(), Source: "test", At: time.Now()}); err != nil {
					t.Fatal(err)
				}
				return h.result()
			}
			req := payment.ECRRefund{Ref: ref, Amount: 2000, Currency: "CAD"}
			a := sale()
			first := h.term.RefundForECR(ctx, req)
			if first.Outcome != payment.OutcomeApproved || first.MchOrderNo != a.MchOrderNo || first.RefundNo == "" {
				t.Fatalf("first refund %+v", first)
			}
			h.term.Taken(ctx, first) // the register took it
			b := sale()
			second := h.term.RefundForECR(ctx, req)
			if second.Outcome != payment.OutcomeApproved || second.MchOrderNo != b.MchOrderNo || second.RefundNo == first.RefundNo {
				t.Fatalf("second sale's refund answered %+v (first %+v)", second, first)
			}
			if n := len(h.sim.Refunds()); n != 2 {
				t.Fatalf("%d refunds at the gateway, want 2", n)
			}
			if o := h.order(b.MchOrderNo); o.Refunded != 2000 {
				t.Fatalf("second sale refunded %d", o.Refunded)
			}
			// The second answer was lost (not taken); a third sale, and the
			// same request again: a retry of the second, or a new refund of
			// the third? Not verified, nothing sent.
			c := sale()
			third := h.term.RefundForECR(ctx, req)
			if third.Outcome != payment.OutcomeUnknown || third.MchOrderNo == c.MchOrderNo {
				t.Fatalf("ambiguous refund answered %+v", third)
			}
			if n := len(h.sim.Refunds()); n != 2 {
				t.Fatalf("an ambiguous refund reached the gateway (%d refunds)", n)
			}
			if o := h.order(c.MchOrderNo); o.Refunded != 0 {
				t.Fatalf("third sale refunded %d", o.Refunded)
			}
		})
	}
}

// A blank-reference refund whose answer was lost, retried after the clock
// stepped a day ahead, is still that refund: answered from the journal,
// never "refused" (it was made) and never sent again.
func TestBlankRefundRetryAfterClockStep(t *testing.T) {
	var offset atomic.Int64
	h := newHarness(t, withConfig(func(c *payment.Config) { c.RefundWindow = 10 * time.Minute }),
		withNow(func() time.Time { return time.Now().Add(time.Duration(offset.Load())) }))
	ctx := context.Background()
	h.ready()
	if err := h.term.RequestSale(ctx, payment.SaleRequest{Amount: 2000, Source: payment.SourceECR}); err != nil {
		t.Fatal(err)
	}
	if err := h.term.Scan(ctx, payment.Code{Text: h.code(), Source: "test", At: time.Now()}); err != nil {
		t.Fatal(err)
	}
	h.result()
	req := payment.ECRRefund{Amount: 2000, Currency: "CAD"}
	if first := h.term.RefundForECR(ctx, req); first.Outcome != payment.OutcomeApproved {
		t.Fatalf("first %+v", first)
	}
	offset.Store(int64(24 * time.Hour))
	if again := h.term.RefundForECR(ctx, req); again.Outcome != payment.OutcomeApproved {
		t.Fatalf("retry after a clock step answered %+v", again)
	}
	if n := len(h.sim.Refunds()); n != 1 {
		t.Fatalf("%d refunds at the gateway", n)
	}
}

// unreachable is a query that got no answer (the router still booting).
func unreachable() iotpay.Result {
	return iotpay.Result{Outcome: iotpay.OutcomeUnknown, Status: -1, Amount: -1,
		Err: &iotpay.Error{Op: "query_order", Msg: "gateway unreachable", NotSent: true}}
}

// "Approved" went out, then the PAID commit failed and the daemon stopped.
// After the restart the gateway does not answer at first (the router boots
// after the Pi): recovery keeps asking until it does, and the sale ends
// PAID, as the customer was told, never refunded as a late payment.
func TestRecoveryWaitsForTheGatewayAfterACrash(t *testing.T) {
	var fj *failJournal
	var down atomic.Int64
	h := newHarness(t, withJournal(func(j payment.Journal) payment.Journal { fj = &failJournal{Journal: j}; return fj }),
		withConfig(func(c *payment.Config) { c.RefundLate = true }),
		withGateway(func(h *harness) payment.Gateway {
			return &scriptGateway{Gateway: h.client, query: func(ctx context.Context, q iotpay.QueryRequest) (iotpay.Result, bool) {
				if down.Add(-1) >= 0 {
					return unreachable(), true
				}
				return iotpay.Result{}, false
			}}
		}))
	h.ready()
	fj.failTransition.Store(true)
	ctx := context.Background()
	if err := h.term.RequestSale(ctx, payment.SaleRequest{Amount: 1000, Source: payment.SourceECR, ECRRef: "R10"}); err != nil {
		t.Fatal(err)
	}
	if err := h.term.Scan(ctx, payment.Code{Text: h.code(), Source: "test", At: time.Now()}); err != nil {
		t.Fatal(err)
	}
	if r := h.resultNow(); r.Outcome != payment.OutcomeApproved {
		t.Fatalf("before the crash: %+v", r)
	}
	<-h.term.Done()
	if err := h.stop(); !isFatal(err) {
		t.Fatalf("Run returned %v", err)
	}
	no := h.sim.Orders()[0].MchOrderNo
	down.Store(30) // many more queries than the order's polling window
	h.wrapJ = nil
	h.start()
	h.ready()
	if o := h.order(no); o.State != journal.StatePaid || o.Refunded != 0 || o.Interrupted {
		t.Fatalf("after recovery: %+v", o)
	}
	if n := len(h.sim.Refunds()); n != 0 {
		t.Fatalf("%d refunds of a sale the customer was told was paid", n)
	}
}

// If the gateway stays silent for the whole recovery, the order goes to
// the reconciler marked interrupted; found paid later, it is held for the
// operator with an alert, not refunded: the customer may have been told
// "approved" before the crash.
func TestInterruptedLatePaymentHeldForTheOperator(t *testing.T) {
	var fj *failJournal
	var down atomic.Bool
	al := &alerts{kinds: map[string]int{}}
	h := newHarness(t, withJournal(func(j payment.Journal) payment.Journal { fj = &failJournal{Journal: j}; return fj }),
		withConfig(func(c *payment.Config) { c.RefundLate = true; c.SaleLimit = 300 * time.Millisecond }),
		withObserver(al),
		withGateway(func(h *harness) payment.Gateway {
			return &scriptGateway{Gateway: h.client, query: func(ctx context.Context, q iotpay.QueryRequest) (iotpay.Result, bool) {
				if down.Load() {
					return unreachable(), true
				}
				return iotpay.Result{}, false
			}}
		}))
	h.ready()
	fj.failTransition.Store(true)
	ctx := context.Background()
	h.term.RequestSale(ctx, payment.SaleRequest{Amount: 1000, Source: payment.SourceECR, ECRRef: "R11"})
	h.term.Scan(ctx, payment.Code{Text: h.code(), Source: "test", At: time.Now()})
	h.resultNow()
	<-h.term.Done()
	h.stop()
	no := h.sim.Orders()[0].MchOrderNo
	down.Store(true)
	h.wrapJ = nil
	h.start()
	h.ready() // the sale limit ends the silent recovery
	if o := h.order(no); o.State != journal.StateUnconfirmed || !o.Interrupted {
		t.Fatalf("after a silent recovery: %+v", o)
	}
	down.Store(false)
	h.eventually("the late payment found", func() bool { return h.order(no).State == journal.StateLatePaid })
	h.eventually("the operator alerted", func() bool { return al.count(payment.AlertLatePayment) >= 2 })
	if o := h.order(no); o.Refunded != 0 || len(h.sim.Refunds()) != 0 {
		t.Fatalf("an interrupted sale was refunded automatically: %+v", o)
	}
}
