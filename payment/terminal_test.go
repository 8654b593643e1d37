package payment_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/scanpay/scanpay/payment"
	"github.com/scanpay/scanpay/payment/iotpay"
	"github.com/scanpay/scanpay/payment/journal"
)

func TestPaidAtOnce(t *testing.T) {
	h := newHarness(t)
	before := h.jr.Commits()
	r := h.sale(2865, h.code())
	if r.Outcome != payment.OutcomeApproved || !r.Final || r.PayOrderID == "" || r.Request.ECRRef != "REF2865" {
		t.Fatalf("result %+v", r)
	}
	// The result leaves before its commit (rule 3); the commit follows.
	h.eventually("PAID on disk", func() bool { return h.order(r.MchOrderNo).State == journal.StatePaid })
	if got := h.jr.Commits() - before; got != 3 {
		t.Fatalf("%d commits for a sale paid at once, want 3 (armed, code attached, paid)", got)
	}
	o := h.order(r.MchOrderNo)
	if o.State != journal.StatePaid || o.Status != 2 || o.PayOrderID != r.PayOrderID || o.Amount != 2865 || o.Channel != "WX_MICROPAY" {
		t.Fatalf("journal %+v", o)
	}
	if len(o.MchOrderNo) > 30 || !strings.HasPrefix(o.MchOrderNo, "T01-") {
		t.Fatalf("order number %q", o.MchOrderNo)
	}
	h.eventually("approved screen and beep", func() bool {
		return h.rec.sawScreen(payment.ScreenApproved) && h.rec.sawBeep(payment.BeepApproved) && h.rec.sawBeep(payment.BeepAccepted)
	})
	if h.sim.OrderRequests("create_order", r.MchOrderNo) != 1 {
		t.Fatal("create_order not sent exactly once")
	}
	h.agree()
}

func TestScenarioOutcomes(t *testing.T) {
	tests := []struct {
		name    string
		amount  int64
		outcome payment.Outcome
		state   journal.State
		commits int64
		screen  payment.ScreenKind
		queries int // exact query_order count, -1: any
	}{
		{"51 declined, confirmed by one query", 1051, payment.OutcomeRefused, journal.StateDeclined, 3, payment.ScreenDeclined, 1},
		{"52 password then paid", 1052, payment.OutcomeApproved, journal.StatePaid, 3, payment.ScreenConfirmOnPhone, 3},
		{"53 cancelled by customer", 1053, payment.OutcomeRefused, journal.StateDeclined, 3, payment.ScreenDeclined, 2},
		{"55 reply lost, paid via query", 1055, payment.OutcomeApproved, journal.StatePaid, 3, payment.ScreenApproved, 1},
		{"57 reply after timeout, paid via query", 1057, payment.OutcomeApproved, journal.StatePaid, 3, payment.ScreenApproved, 1},
		{"58 malformed replies then paid", 1058, payment.OutcomeApproved, journal.StatePaid, 3, payment.ScreenApproved, 3},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			before := h.jr.Commits()
			r := h.sale(tc.amount, h.code())
			if r.Outcome != tc.outcome || !r.Final {
				t.Fatalf("result %+v", r)
			}
			h.eventually("settled on disk", func() bool { return h.order(r.MchOrderNo).State == tc.state })
			o := h.order(r.MchOrderNo)
			if tc.amount == 1051 && o.Message != "insufficient balance" {
				t.Fatalf("decline reason %q: the gateway's reason must be kept", o.Message)
			}
			if got := h.jr.Commits() - before; got != tc.commits {
				t.Fatalf("%d commits, want %d", got, tc.commits)
			}
			if tc.queries >= 0 {
				if got := h.sim.OrderRequests("query_order", r.MchOrderNo); got != tc.queries {
					t.Fatalf("%d queries, want %d", got, tc.queries)
				}
			}
			if got := h.sim.OrderRequests("create_order", r.MchOrderNo); got != 1 {
				t.Fatalf("create_order sent %d times", got)
			}
			h.eventually("screen "+tc.screen.String(), func() bool { return h.rec.sawScreen(tc.screen) })
			h.agree()
		})
	}
}

func TestWrongSignNeverApproved(t *testing.T) {
	h := newHarness(t)
	r := h.sale(1059, h.code())
	if r.Outcome != payment.OutcomeUnknown || r.Final {
		t.Fatalf("result %+v", r)
	}
	// The reconciler keeps asking past the sale's window; the replies
	// never verify.
	h.eventually("the reconciler querying", func() bool {
		return h.sim.OrderRequests("query_order", r.MchOrderNo) > h.cfg.PollAttempts+2
	})
	o := h.order(r.MchOrderNo)
	if o.State != journal.StateUnconfirmed {
		t.Fatalf("state %s", o.State)
	}
	if h.rec.sawScreen(payment.ScreenApproved) || h.rec.sawBeep(payment.BeepApproved) {
		t.Fatal("a badly signed reply was shown as approved")
	}
	h.eventually("not confirmed screen", func() bool { return h.rec.sawScreen(payment.ScreenNotConfirmed) })
	if h.sim.OrderRequests("query_order", r.MchOrderNo) <= h.cfg.PollAttempts {
		t.Fatal("the reconciler did not keep querying")
	}
	h.agree()
}

func TestBadGatewayResolvedAsNotReceived(t *testing.T) {
	h := newHarness(t)
	r := h.sale(1056, h.code())
	if r.Outcome != payment.OutcomeUnknown {
		t.Fatalf("a 502 must not be final within the sale: %+v", r)
	}
	h.eventually("reconciler declines the order the gateway never had", func() bool {
		return h.order(r.MchOrderNo).State == journal.StateDeclined
	})
	if len(h.sim.Orders()) != 0 {
		t.Fatal("simulator created an order for a 502")
	}
	h.agree()
}

func TestLatePayment(t *testing.T) {
	for _, auto := range []bool{false, true} {
		name := map[bool]string{false: "flagged", true: "refunded"}[auto]
		t.Run(name, func(t *testing.T) {
			h := newHarness(t, withConfig(func(c *payment.Config) { c.RefundLate = auto }))
			r := h.sale(1054, h.code())
			if r.Outcome != payment.OutcomeUnknown {
				t.Fatalf("result %+v", r)
			}
			h.eventually("unconfirmed", func() bool { return h.order(r.MchOrderNo).State == journal.StateUnconfirmed })
			h.eventually("not confirmed screen", func() bool { return h.rec.sawScreen(payment.ScreenNotConfirmed) })
			h.clock.Advance(91 * time.Second)
			h.eventually("late paid", func() bool { return h.order(r.MchOrderNo).State == journal.StateLatePaid })
			if h.rec.sawScreen(payment.ScreenApproved) {
				t.Fatal("a late payment was shown as approved")
			}
			if auto {
				h.eventually("refund in the ledger", func() bool { return len(h.sim.Refunds()) == 1 })
				h.eventually("refund journaled", func() bool { return h.order(r.MchOrderNo).Refunded == 1054 })
				open, _ := h.jr.OpenOrders(context.Background())
				if len(open) != 0 {
					t.Fatalf("a refunded late payment is still open: %+v", open)
				}
			} else {
				// The reconciler refunds right after it finds the late
				// payment, or logs that the operator must: wait for that.
				h.eventually("late payment left to the operator", func() bool {
					return h.logs.FilterMessageSnippet("late payment needs a refund by the operator").Len() > 0
				})
				if len(h.sim.Refunds()) != 0 {
					t.Fatal("refunded without refund_late")
				}
				open, _ := h.jr.OpenOrders(context.Background())
				if len(open) != 1 || open[0].State != journal.StateLatePaid {
					t.Fatalf("the late payment must stay listed for the operator: %+v", open)
				}
			}
			h.agree()
		})
	}
}

// refusingDial fails create_order before any byte is sent, like a refused
// connection, and lets queries through.
func refusingDial(h *harness) payment.Gateway {
	return &scriptGateway{Gateway: h.client, create: func(ctx context.Context, r iotpay.CreateRequest) (iotpay.Result, bool) {
		return iotpay.Result{Outcome: iotpay.OutcomeUnknown, Status: -1, Amount: -1, Err: &iotpay.Error{Op: "create_order", Msg: "gateway unreachable", NotSent: true,
			Err: &net.OpError{Op: "dial", Net: "tcp", Err: errors.New("connection refused")}}}, true
	}}
}

func TestConnectionRefused(t *testing.T) {
	h := newHarness(t, withGateway(refusingDial))
	r := h.sale(2000, h.code())
	if r.Outcome != payment.OutcomeRefused || !r.Final {
		t.Fatalf("result %+v", r)
	}
	o := h.order(r.MchOrderNo)
	if o.State != journal.StateDeclined || !strings.Contains(o.Message, "not sent") || !o.NotSent {
		t.Fatalf("journal %+v", o)
	}
	h.eventually("offline screen", func() bool { return h.rec.sawScreen(payment.ScreenOffline) })
	if len(h.sim.Orders()) != 0 {
		t.Fatal("charged")
	}
}

// A code used before a restart is refused after it, once the lane checks
// codes in memory (the journal's code filter) as before it.
func TestUsedCodeRefusedAfterRestart(t *testing.T) {
	h := newHarness(t)
	used, fresh := h.code(), h.code()
	if r := h.sale(100, used); r.Outcome != payment.OutcomeApproved {
		t.Fatalf("first use: %+v", r)
	}
	h.restart()
	h.ready()
	h.eventually("code filter loaded", h.jr.CodesFiltered)
	ctx := context.Background()
	if err := h.term.RequestSale(ctx, payment.SaleRequest{Amount: 200}); err != nil {
		t.Fatal(err)
	}
	h.term.Scan(ctx, payment.Code{Text: used})
	h.eventually("code used", func() bool { return h.rec.sawScreen(payment.ScreenCodeUsed) })
	if n := h.sim.Requests("create_order"); n != 1 {
		t.Fatalf("%d create_order requests after a used code, want 1", n)
	}
	h.term.Scan(ctx, payment.Code{Text: fresh})
	if r := h.result(); r.Outcome != payment.OutcomeApproved || r.Request.Amount != 200 {
		t.Fatalf("a fresh code after the used one: %+v", r)
	}
}

func TestCodeChecks(t *testing.T) {
	h := newHarness(t)
	h.ready()
	ctx := context.Background()
	code := h.code()
	// A code without an amount.
	h.term.Scan(ctx, payment.Code{Text: code})
	h.eventually("enter amount first", func() bool { return h.rec.sawScreen(payment.ScreenEnterAmountFirst) })
	if r := h.sale(100, code); r.Outcome != payment.OutcomeApproved {
		t.Fatalf("first use: %+v", r)
	}
	// The same code again is refused locally; the lane keeps waiting.
	h.eventually("idle", func() bool { return h.term.State() == payment.StateIdle })
	if err := h.term.RequestSale(ctx, payment.SaleRequest{Amount: 200}); err != nil {
		t.Fatal(err)
	}
	h.term.Scan(ctx, payment.Code{Text: code})
	h.eventually("code used", func() bool { return h.rec.sawScreen(payment.ScreenCodeUsed) })
	h.term.Scan(ctx, payment.Code{Text: "99999"})
	h.eventually("unsupported", func() bool { return h.rec.sawScreen(payment.ScreenUnsupported) })
	if st := h.term.State(); st != payment.StateAwaitingCode {
		t.Fatalf("state after refused codes: %s", st)
	}
	if n := h.sim.Requests("create_order"); n != 1 {
		t.Fatalf("%d create_order requests, want 1", n)
	}
	// A fresh code completes the pending sale.
	h.term.Scan(ctx, payment.Code{Text: h.code()})
	if r := h.result(); r.Outcome != payment.OutcomeApproved || r.Request.Amount != 200 {
		t.Fatalf("second sale %+v", r)
	}
}

func TestBusyCancelAndTimeout(t *testing.T) {
	h := newHarness(t, withConfig(func(c *payment.Config) {
		c.CodeTimeout = 50 * time.Millisecond
		c.PollAttempts = 400 // a 2 s window: the lane is seen POLLING however loaded the machine
	}))
	h.ready()
	ctx := context.Background()
	if err := h.term.RequestSale(ctx, payment.SaleRequest{Amount: 100, Source: payment.SourceECR, ECRRef: "A"}); err != nil {
		t.Fatal(err)
	}
	if err := h.term.RequestSale(ctx, payment.SaleRequest{Amount: 100}); !errors.Is(err, payment.ErrBusy) {
		t.Fatalf("second request: %v", err)
	}
	if err := h.term.Cancel(ctx); err != nil {
		t.Fatal(err)
	}
	if r := h.result(); r.Outcome != payment.OutcomeRefused || r.Request.ECRRef != "A" || r.Message != "cancelled" {
		t.Fatalf("cancel result %+v", r)
	}
	// Asked again, the journal answers as the lane did: refused, final
	// (so the register's retry is a new sale, not "not verified").
	if r, err := h.term.LastResult(ctx, "A"); err != nil || r.Outcome != payment.OutcomeRefused || !r.Final {
		t.Fatalf("the cancelled sale asked again: %+v %v", r, err)
	}
	if err := h.term.RequestSale(ctx, payment.SaleRequest{Amount: 300}); err != nil {
		t.Fatal(err)
	}
	if r := h.result(); r.Outcome != payment.OutcomeRefused || r.Message != "timed out" {
		t.Fatalf("timeout result %+v", r)
	}
	for _, bad := range []payment.SaleRequest{{Amount: 0}, {Amount: -5}, {Amount: h.cfg.MaxAmount + 1}} {
		if err := h.term.RequestSale(ctx, bad); !errors.Is(err, payment.ErrBadAmount) {
			t.Errorf("amount %d: %v", bad.Amount, err)
		}
	}
	if err := h.term.RequestSale(ctx, payment.SaleRequest{Amount: 100, Currency: "EUR"}); !errors.Is(err, payment.ErrCurrency) {
		t.Errorf("EUR: %v", err)
	}
	// A sale in flight cannot be cancelled: IOTPay has no reverse.
	slow := h.code()
	h.term.RequestSale(ctx, payment.SaleRequest{Amount: 1054}) // pending for the whole window
	h.term.Scan(ctx, payment.Code{Text: slow})
	h.eventually("polling", func() bool { return h.term.State() == payment.StatePolling })
	if err := h.term.Cancel(ctx); !errors.Is(err, payment.ErrBusy) {
		t.Fatalf("cancel during polling: %v", err)
	}
	if err := h.term.RequestSale(ctx, payment.SaleRequest{Amount: 100}); !errors.Is(err, payment.ErrBusy) {
		t.Fatalf("request during polling: %v", err)
	}
	if r := h.result(); r.Outcome != payment.OutcomeUnknown {
		t.Fatalf("%+v", r)
	}
}

// The order is written when the amount is armed: if that fails, the lane
// stops before any code is taken, and nothing is sent.
func TestStorageFailureBeforeSendStops(t *testing.T) {
	var fj *failJournal
	h := newHarness(t, withJournal(func(j payment.Journal) payment.Journal { fj = &failJournal{Journal: j}; return fj }))
	h.ready()
	fj.failArm.Store(true)
	ctx := context.Background()
	if err := h.term.RequestSale(ctx, payment.SaleRequest{Amount: 100}); err == nil {
		t.Fatal("an amount was taken that could not be written")
	}
	h.term.Scan(ctx, payment.Code{Text: h.code()})
	<-h.term.Done()
	if err := h.stop(); !isFatal(err) {
		t.Fatalf("Run returned %v, want a fatal error", err)
	}
	if n := h.sim.Requests("create_order"); n != 0 {
		t.Fatalf("create_order sent %d times after the journal failed", n)
	}
	if !h.rec.sawScreen(payment.ScreenOutOfService) {
		t.Fatal("no out-of-service screen")
	}
}

// The code's link is written while create_order flies: if that fails, the
// lane stops; the order, armed on disk, is asked about after the restart
// and settled as the gateway has it.
func TestStorageFailureWhileSendingRecovers(t *testing.T) {
	var fj *failJournal
	h := newHarness(t, withJournal(func(j payment.Journal) payment.Journal { fj = &failJournal{Journal: j}; return fj }),
		withConfig(func(c *payment.Config) { c.RefundLate = true }),
		withGateway(func(h *harness) payment.Gateway {
			// The request reaches the gateway even though the lane stops
			// right after sending it.
			return &scriptGateway{Gateway: h.client, create: func(ctx context.Context, r iotpay.CreateRequest) (iotpay.Result, bool) {
				return h.client.CreateOrder(context.WithoutCancel(ctx), r), true
			}}
		}))
	h.ready()
	fj.failAttach.Store(true)
	ctx := context.Background()
	h.term.RequestSale(ctx, payment.SaleRequest{Amount: 700, Source: payment.SourceECR, ECRRef: "R8"})
	h.term.Scan(ctx, payment.Code{Text: h.code()})
	<-h.term.Done()
	if err := h.stop(); !isFatal(err) {
		t.Fatalf("Run returned %v", err)
	}
	orders := h.sim.Orders()
	if len(orders) != 1 {
		t.Fatalf("%d gateway orders", len(orders))
	}
	no := orders[0].MchOrderNo
	h.wrapJ = nil
	h.start()
	h.ready()
	// Paid at the gateway: recovery's one query settles it PAID (the
	// customer paid for this sale), and a register asking again hears
	// "approved".
	h.eventually("the interrupted order settled paid", func() bool { return h.order(no).State == journal.StatePaid })
	if o := h.order(no); o.Refunded != 0 {
		t.Fatalf("a paid sale was refunded: %+v", o)
	}
	if r, err := h.term.LastResult(ctx, "R8"); err != nil || r.Outcome != payment.OutcomeApproved || !r.Final {
		t.Fatalf("asked again: %+v %v", r, err)
	}
	h.agree()
}

func TestDiskFullStopsBeforeSend(t *testing.T) {
	h := newHarness(t)
	h.stop()
	// A page cap at the current size stands in for a full SD card: SQLite
	// cannot grow the file, so some order's commit fails with SQLITE_FULL.
	h.wrapJ = func(payment.Journal) payment.Journal {
		j, err := journal.Open(h.jpath, journal.Options{MaxPages: 1})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { j.Close() })
		return j
	}
	h.start()
	h.ready()
	ctx := context.Background()
	var runErr error
	for i := 0; i < 300 && runErr == nil; i++ {
		if err := h.term.RequestSale(ctx, payment.SaleRequest{Amount: 100}); err != nil {
			runErr = h.stop()
			break
		}
		h.term.Scan(ctx, payment.Code{Text: h.code()})
		select {
		case <-h.rec.resCh:
		case <-h.term.Done():
			runErr = h.stop()
		case <-time.After(5 * time.Second):
			t.Fatal("stuck")
		}
	}
	if !isFatal(runErr) || !strings.Contains(runErr.Error(), "full") {
		t.Fatalf("a full journal did not stop the terminal: %v", runErr)
	}
	// Every order the gateway saw is on disk.
	j, err := journal.Open(h.jpath, journal.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	for _, so := range h.sim.Orders() {
		if _, err := j.Get(ctx, so.MchOrderNo); err != nil {
			t.Fatalf("order %s sent but not journaled", so.MchOrderNo)
		}
	}
}

func TestStorageFailureAfterSendRecovers(t *testing.T) {
	var fj *failJournal
	h := newHarness(t, withJournal(func(j payment.Journal) payment.Journal { fj = &failJournal{Journal: j}; return fj }))
	h.ready()
	fj.failTransition.Store(true)
	ctx := context.Background()
	code := h.code()
	h.term.RequestSale(ctx, payment.SaleRequest{Amount: 700, Source: payment.SourceECR, ECRRef: "R7"})
	h.term.Scan(ctx, payment.Code{Text: code})
	<-h.term.Done()
	if err := h.stop(); !isFatal(err) {
		t.Fatalf("Run returned %v", err)
	}
	// The gateway's answer was shown before its commit (rule 3); the
	// commit failed, so the lane stopped before any other sale. Restart on
	// the same journal: the order is resumed and settled before the lane
	// accepts a sale.
	h.wrapJ = nil
	h.start()
	h.ready()
	res, err := h.term.LastResult(ctx, "R7")
	if err != nil || res.Outcome != payment.OutcomeApproved || !res.Final {
		t.Fatalf("last result %+v %v", res, err)
	}
	if n := len(h.sim.Orders()); n != 1 {
		t.Fatalf("%d gateway orders", n)
	}
	h.agree()
}

func TestRecoveryBeforeNewSales(t *testing.T) {
	h := newHarness(t)
	h.ready()
	h.stop()
	// A previous run journaled an order and sent it, then died.
	j, _ := journal.Open(h.jpath, journal.Options{})
	// Paid at the gateway already, so whatever the order's age (a fresh one
	// is polled, an old one queried once) recovery settles it as PAID.
	o, err := j.AddOrder(context.Background(), journal.NewOrder{TerminalID: "T01", Amount: 2000, Currency: "CAD", Channel: "WX_MICROPAY",
		CodeMasked: "13**", CodeHash: "h-recover", Source: "ecr", ECRRef: "OLD"}, func(n uint64) string { return payment.OrderNumber("T01", n) })
	if err != nil {
		t.Fatal(err)
	}
	j.Close()
	h.client.CreateOrder(context.Background(), iotpay.CreateRequest{MchOrderNo: o.MchOrderNo, ChannelID: "WX_MICROPAY", Currency: "CAD", Amount: 2000, IdentityCode: h.code()})
	h.start()
	ctx := context.Background()
	if err := h.term.RequestSale(ctx, payment.SaleRequest{Amount: 100}); !errors.Is(err, payment.ErrNotReady) && !errors.Is(err, payment.ErrBusy) {
		// Ready may already have come if recovery was very fast; then the
		// order must already be settled.
		if h.order(o.MchOrderNo).State.Open() {
			t.Fatalf("sale accepted while an order was open: %v", err)
		}
		h.term.Cancel(ctx)
	}
	h.ready()
	if got := h.order(o.MchOrderNo); got.State != journal.StatePaid {
		t.Fatalf("recovered order is %s", got.State)
	}
	res := h.result()
	if res.Request.ECRRef != "OLD" || res.Outcome != payment.OutcomeApproved {
		t.Fatalf("recovered result %+v", res)
	}
	if h.sim.OrderRequests("create_order", o.MchOrderNo) != 1 {
		t.Fatal("recovery re-sent create_order")
	}
}

func TestRefunds(t *testing.T) {
	var lose atomic_bool
	h := newHarness(t, withGateway(func(h *harness) payment.Gateway {
		return &scriptGateway{Gateway: h.client, refund: func(ctx context.Context, r iotpay.RefundRequest) (iotpay.Result, bool) {
			if lose.get() {
				h.client.RefundOrder(ctx, r) // the gateway does it; the reply is lost
				return iotpay.Result{Outcome: iotpay.OutcomeUnknown, Status: -1, Err: &iotpay.Error{Op: "refund_order", Msg: "gateway timeout"}}, true
			}
			return iotpay.Result{}, false
		}}
	}))
	ctx := context.Background()
	r := h.sale(1000, h.code())
	rf, err := h.term.Refund(ctx, payment.RefundRequest{ID: r.MchOrderNo, Amount: 300})
	if err != nil || rf.State != journal.RefundDone || rf.Amount != 300 {
		t.Fatalf("partial refund %+v %v", rf, err)
	}
	if _, err := h.term.Refund(ctx, payment.RefundRequest{ID: r.PayOrderID, Amount: 800}); !errors.Is(err, journal.ErrRefundTooLarge) {
		t.Fatalf("over-refund: %v", err)
	}
	lose.set(true)
	rf, err = h.term.Refund(ctx, payment.RefundRequest{ID: r.MchOrderNo})
	if err != nil || rf.State != journal.RefundUnknown || rf.Amount != 700 {
		t.Fatalf("lost refund %+v %v", rf, err)
	}
	// The uncertain refund blocks a second one.
	if _, err := h.term.Refund(ctx, payment.RefundRequest{ID: r.MchOrderNo, Amount: 1}); !errors.Is(err, journal.ErrRefundTooLarge) {
		t.Fatalf("refund after an uncertain one: %v", err)
	}
	if got := h.order(r.MchOrderNo).Refunded; got != 300 {
		t.Fatalf("refunded %d", got)
	}
	total := int64(0)
	for _, x := range h.sim.Refunds() {
		total += x.Amount
	}
	if total != 1000 {
		t.Fatalf("ledger refunded %d", total)
	}
	dec := h.sale(1051, h.code())
	if _, err := h.term.Refund(ctx, payment.RefundRequest{ID: dec.MchOrderNo}); err == nil {
		t.Fatal("refund of a declined order accepted")
	}
	h.eventually("refund screen", func() bool { return h.rec.sawScreen(payment.ScreenRefundDone) })
}

type atomic_bool struct{ v atomic.Bool }

func (a *atomic_bool) get() bool  { return a.v.Load() }
func (a *atomic_bool) set(b bool) { a.v.Store(b) }

// An order left ARMED that was never sent (the lane stopped while waiting
// for a code) costs one query at start-up and is handed quietly to the
// reconciler: no screen, no beep, no result for the register.
func TestArmedNeverSentHandedOver(t *testing.T) {
	h := newHarness(t)
	h.ready()
	ctx := context.Background()
	if err := h.term.RequestSale(ctx, payment.SaleRequest{Amount: 900, Source: payment.SourceECR, ECRRef: "R9"}); err != nil {
		t.Fatal(err)
	}
	h.eventually("awaiting a code", func() bool { return h.term.State() == payment.StateAwaitingCode })
	if err := h.stop(); err != nil {
		t.Fatal(err)
	}
	ro, err := journal.Open(h.jpath, journal.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	open, err := ro.OpenOrders(ctx)
	ro.Close()
	if err != nil || len(open) != 1 || open[0].State != journal.StateArmed {
		t.Fatalf("open orders %+v %v", open, err)
	}
	no := open[0].MchOrderNo
	h.start() // a new recorder
	h.ready()
	h.eventually("handed to the reconciler", func() bool { return h.order(no).State != journal.StateArmed })
	if o := h.order(no); o.State != journal.StateUnconfirmed && o.State != journal.StateCancelled {
		t.Fatalf("never-sent order %+v", o)
	}
	if got := h.sim.OrderRequests("query_order", no); got < 1 {
		t.Fatal("recovery did not ask the gateway")
	}
	h.rec.mu.Lock()
	defer h.rec.mu.Unlock()
	for _, s := range h.rec.screens {
		if s.Kind == payment.ScreenApproved || s.Kind == payment.ScreenDeclined || s.Kind == payment.ScreenNotConfirmed {
			t.Fatalf("a never-sent order was shown: %+v", s)
		}
	}
	if len(h.rec.results) != 0 || len(h.rec.beeps) != 0 {
		t.Fatalf("a never-sent order reached the register (%d results) or the beeper (%d)", len(h.rec.results), len(h.rec.beeps))
	}
}

// finishFailJournal fails the write that records a refund's outcome, as a
// dying disk would.
type finishFailJournal struct{ payment.Journal }

func (finishFailJournal) FinishRefund(context.Context, string, journal.RefundState, string) (journal.Refund, error) {
	return journal.Refund{}, errDisk
}

// hangingRefunds is the gateway with a refund_order that gets no reply
// until its caller gives up (a register that reconnects mid-refund).
type hangingRefunds struct {
	payment.Gateway
	sent chan struct{}
}

func (g hangingRefunds) RefundOrder(ctx context.Context, r iotpay.RefundRequest) iotpay.Result {
	close(g.sent)
	<-ctx.Done()
	return g.Gateway.RefundOrder(ctx, r)
}

// A refund's outcome is written under a context detached from its caller,
// so its failure is the disk's, not the caller's leaving: the daemon must
// stop, even though the caller's context has ended by then.
func TestRefundOutcomeWriteFailureStopsAfterCallerLeft(t *testing.T) {
	sent := make(chan struct{})
	h := newHarness(t,
		withGateway(func(h *harness) payment.Gateway { return hangingRefunds{Gateway: h.client, sent: sent} }),
		withJournal(func(j payment.Journal) payment.Journal { return finishFailJournal{j} }))
	h.ready()
	r := h.sale(1000, h.code())
	if r.Outcome != payment.OutcomeApproved {
		t.Fatalf("sale: %+v", r)
	}
	ctx, cancel := context.WithCancel(context.Background())
	go func() { <-sent; cancel() }()
	if _, err := h.term.Refund(ctx, payment.RefundRequest{ID: r.MchOrderNo}); err == nil {
		t.Fatal("refund whose outcome could not be written reported success")
	}
	select {
	case <-h.term.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("the terminal carries on after a failed write of a refund's outcome")
	}
	if err := h.stop(); !isFatal(err) {
		t.Fatalf("run ended with %v, want a FatalError", err)
	}
}

// A sale's outcome is committed without its own fsync (journal.Settle):
// the lane syncs it no later than SyncAfter, so an idle lane does not
// leave it to a power cut for long. Two fsyncs per keypad sale: the arm,
// and the sync that covers the code's link and the outcome.
func TestOutcomeSyncedSoonAfterSale(t *testing.T) {
	h := newHarness(t) // SyncAfter as shipped: a second
	h.ready()
	synced := h.jr.SyncedCommits()
	r := h.sale(900, h.code())
	if r.Outcome != payment.OutcomeApproved {
		t.Fatalf("sale: %+v", r)
	}
	if err := h.term.Settled(context.Background()); err != nil {
		t.Fatal(err)
	}
	if o := h.order(r.MchOrderNo); o.State != journal.StatePaid {
		t.Fatalf("outcome not committed: %s", o.State)
	}
	if !h.jr.Unsynced() {
		t.Fatal("the outcome was committed with its own fsync")
	}
	h.eventually("the outcome synced", func() bool { return !h.jr.Unsynced() })
	if n := h.jr.SyncedCommits() - synced; n != 2 {
		t.Fatalf("%d synced commits for one keypad sale, want 2 (arm, sync)", n)
	}
}

// The sync that makes an outcome durable is a commit like any other: when
// the disk fails it, the lane stops.
func TestSyncFailureStops(t *testing.T) {
	var fj *failJournal
	h := newHarness(t, withJournal(func(j payment.Journal) payment.Journal { fj = &failJournal{Journal: j}; return fj }),
		withConfig(func(c *payment.Config) { c.SyncAfter = 20 * time.Millisecond }))
	h.ready()
	fj.failSync.Store(true)
	if r := h.sale(900, h.code()); r.Outcome != payment.OutcomeApproved {
		t.Fatalf("sale: %+v", r)
	}
	select {
	case <-h.term.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("a failed sync did not stop the lane")
	}
	if err := h.stop(); !isFatal(err) {
		t.Fatalf("Run returned %v, want a fatal error", err)
	}
}

// A stop that lands just after a result went out, while its outcome is
// being committed (SIGTERM right after a sale), is a clean stop: the
// commit cut short leaves the order open for recovery, and the lane never
// reports it as a journal failure. Each restart finds every order settled
// or resumable.
func TestStopRightAfterResultIsClean(t *testing.T) {
	h := newHarness(t)
	for i := 0; i < 30; i++ {
		h.ready()
		ctx := context.Background()
		ref := fmt.Sprintf("S%d", i)
		if err := h.term.RequestSale(ctx, payment.SaleRequest{Amount: 700, Source: payment.SourceECR, ECRRef: ref}); err != nil {
			t.Fatal(err)
		}
		if err := h.term.Scan(ctx, payment.Code{Text: h.code()}); err != nil {
			t.Fatal(err)
		}
		// This round's result: a sale the last stop cut short was resumed
		// before READY, and its result went out first.
		r := h.resultNow()
		for r.Request.Source != payment.SourceECR || r.Request.ECRRef != ref {
			if r.Outcome != payment.OutcomeApproved {
				t.Fatalf("round %d: a resumed sale ended %+v", i, r)
			}
			r = h.resultNow()
		}
		if r.Outcome != payment.OutcomeApproved {
			t.Fatalf("round %d: %+v", i, r)
		}
		if err := h.stop(); err != nil {
			t.Fatalf("round %d: a stop right after a result ended the lane with %v", i, err)
		}
		h.start()
	}
	h.ready()
	h.agree()
}

// The sync timer waits only while the lane is idle: a sale armed before it
// fires is covered by the arm's fsync, and no sync falls in the middle of
// the next sale, where it would hold up the reply for an fsync.
func TestNoSyncMidSale(t *testing.T) {
	slow := make(chan struct{})
	h := newHarness(t, withConfig(func(c *payment.Config) { c.SyncAfter = 400 * time.Millisecond }),
		withGateway(func(h *harness) payment.Gateway {
			return &scriptGateway{Gateway: h.client, create: func(ctx context.Context, r iotpay.CreateRequest) (iotpay.Result, bool) {
				select {
				case <-slow:
					time.Sleep(1200 * time.Millisecond) // well past SyncAfter
				default:
				}
				return h.client.CreateOrder(ctx, r), true
			}}
		}))
	h.ready()
	if r := h.sale(900, h.code()); r.Outcome != payment.OutcomeApproved {
		t.Fatalf("first sale: %+v", r)
	}
	close(slow)
	synced := h.jr.SyncedCommits()
	r := h.sale(800, h.code()) // armed at once (well within SyncAfter), its reply 1.2 s away
	if r.Outcome != payment.OutcomeApproved {
		t.Fatalf("second sale: %+v", r)
	}
	if n := h.jr.SyncedCommits() - synced; n != 1 {
		t.Fatalf("%d synced commits from the second sale's arm to its result, want 1 (the arm)", n)
	}
	h.eventually("the second outcome synced", func() bool { return !h.jr.Unsynced() })
}

// "amount pending" names the order the amount armed, so a technician can
// follow a sale from its first line to its last.
func TestAmountPendingNamesTheOrder(t *testing.T) {
	h := newHarness(t)
	h.ready()
	ctx := context.Background()
	if err := h.term.RequestSale(ctx, payment.SaleRequest{Amount: 1500, Source: payment.SourceKeypad}); err != nil {
		t.Fatal(err)
	}
	open, err := h.jr.OpenOrders(ctx)
	if err != nil || len(open) != 1 || open[0].State != journal.StateArmed {
		t.Fatalf("open orders %+v %v", open, err)
	}
	h.eventually("the amount pending line", func() bool {
		for _, e := range h.logs.FilterMessage("amount pending").All() {
			if e.ContextMap()["mchOrderNo"] == open[0].MchOrderNo && e.ContextMap()["amount"] == int64(1500) {
				return true
			}
		}
		return false
	})
}

// instantScreen records screens; its Show never blocks.
type instantScreen struct {
	mu      sync.Mutex
	screens []payment.Screen
}

func (s *instantScreen) Show(sc payment.Screen) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.screens = append(s.screens, sc)
	return nil
}

func (s *instantScreen) ShowsInstantly() {}

func (s *instantScreen) last() payment.Screen {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.screens) == 0 {
		return payment.Screen{}
	}
	return s.screens[len(s.screens)-1]
}

// A display whose Show never blocks is called by the lane itself: the
// screen for an armed amount is there by the time RequestSale returns.
func TestInstantScreenShownByTheLane(t *testing.T) {
	sink := &instantScreen{}
	h := newHarness(t, withScreen(sink))
	h.ready()
	if err := h.term.RequestSale(context.Background(), payment.SaleRequest{Amount: 1200}); err != nil {
		t.Fatal(err)
	}
	if s := sink.last(); s.Kind != payment.ScreenAwaitingCode || s.Amount != 1200 {
		t.Fatalf("when RequestSale returned the display showed %+v", s)
	}
	if err := h.term.Scan(context.Background(), payment.Code{Text: h.code()}); err != nil {
		t.Fatal(err)
	}
	if r := h.result(); r.Outcome != payment.OutcomeApproved {
		t.Fatalf("sale: %+v", r)
	}
	h.eventually("the approved screen", func() bool { return sink.last().Kind == payment.ScreenApproved })
}
