package payment_test

import (
	"context"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"go.uber.org/zap/zaptest"

	"github.com/scanpay/scanpay/payment"
	"github.com/scanpay/scanpay/payment/iotpay"
	"github.com/scanpay/scanpay/payment/journal"
)

// fakeGateway is a call-recording gateway whose answers a test scripts.
type fakeGateway struct {
	mu      sync.Mutex
	calls   []string
	queryAt []time.Time
	create  iotpay.Result
	query   func(n int) iotpay.Result
	// block, when set, answers every create and query instead, and may
	// wait on the call's context (a gateway that never answers in time).
	block func(ctx context.Context) iotpay.Result
}

func (g *fakeGateway) CreateOrder(ctx context.Context, r iotpay.CreateRequest) iotpay.Result {
	g.mu.Lock()
	g.calls = append(g.calls, "create "+r.MchOrderNo)
	block, res := g.block, g.create
	g.mu.Unlock()
	if block != nil {
		return block(ctx)
	}
	return res
}

func (g *fakeGateway) QueryOrder(ctx context.Context, q iotpay.QueryRequest) iotpay.Result {
	g.mu.Lock()
	g.calls = append(g.calls, "query "+q.MchOrderNo)
	g.queryAt = append(g.queryAt, time.Now())
	n, block := len(g.queryAt), g.block
	g.mu.Unlock()
	if block != nil {
		return block(ctx)
	}
	return g.query(n)
}

func (g *fakeGateway) RefundOrder(_ context.Context, r iotpay.RefundRequest) iotpay.Result {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.calls = append(g.calls, "refund "+r.PayOrderID)
	return iotpay.Result{Outcome: iotpay.OutcomeRefunded, Status: -1}
}

func (g *fakeGateway) queries() []time.Time {
	g.mu.Lock()
	defer g.mu.Unlock()
	return append([]time.Time(nil), g.queryAt...)
}

func pending() iotpay.Result {
	return iotpay.Result{Outcome: iotpay.OutcomePending, Status: 1, PayOrderID: "AM1", Amount: -1}
}

// paid is a query's signed "paid" for an order of amount cents.
func paid(amount int64, status int) iotpay.Result {
	return iotpay.Result{Outcome: iotpay.OutcomePaid, Status: status, PayOrderID: "AM1", Amount: amount, Currency: "CAD"}
}

// TestPollingWindowFakeTime runs the documented policy (query every 2 s, 30
// times) and the reconciler's backoff in fake time: minutes of gateway
// waiting take milliseconds.
func TestPollingWindowFakeTime(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var paidFrom atomic.Int64
		gw := &fakeGateway{create: pending(), query: func(n int) iotpay.Result {
			if p := paidFrom.Load(); p > 0 && int64(n) >= p {
				return paid(2865, 2)
			}
			return pending()
		}}
		jr, err := journal.Open(filepath.Join(t.TempDir(), "j.db"), journal.Options{})
		if err != nil {
			t.Fatal(err)
		}
		defer jr.Close()
		wallets, _ := payment.NewWallets(payment.DefaultWalletRules())
		rec := newRecorder()
		cfg := payment.DefaultConfig()
		term, err := payment.New(cfg, payment.Deps{Gateway: gw, Journal: jr, Wallets: wallets, Screen: rec, Beeper: rec, Results: rec, Logger: zaptest.NewLogger(t)})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error)
		go func() { done <- term.Run(ctx) }()
		<-term.Ready()
		start := time.Now()
		term.RequestSale(ctx, payment.SaleRequest{Amount: 2865})
		term.Scan(ctx, payment.Code{Text: "134567890123456789"})
		r := <-rec.resCh
		if r.Outcome != payment.OutcomeUnknown || r.Final {
			t.Fatalf("result %+v", r)
		}
		qs := gw.queries()
		if len(qs) != cfg.PollAttempts {
			t.Fatalf("%d queries in the window, want %d", len(qs), cfg.PollAttempts)
		}
		for i, at := range qs {
			if want := start.Add(time.Duration(i+1) * cfg.PollInterval); !at.Equal(want) {
				t.Fatalf("query %d at +%v, want +%v", i+1, at.Sub(start), want.Sub(start))
			}
		}
		if got := time.Since(start); got != 60*time.Second {
			t.Fatalf("window took %v of fake time", got)
		}
		synctest.Wait()
		if !rec.sawScreen(payment.ScreenNotConfirmed) || rec.sawScreen(payment.ScreenApproved) {
			t.Fatal("window end must show not confirmed, never approved")
		}
		// The reconciler backs off: 15 s doubling to a 10 min cap, jittered.
		time.Sleep(time.Hour)
		recQs := gw.queries()[cfg.PollAttempts:]
		if n := len(recQs); n < 6 || n > 14 {
			t.Fatalf("%d reconcile queries in an hour", n)
		}
		for i := 1; i < len(recQs); i++ {
			gap := recQs[i].Sub(recQs[i-1])
			if gap < cfg.ReconcileMin || gap > cfg.ReconcileMax+cfg.ReconcileMax/5 {
				t.Fatalf("reconcile gap %v out of bounds", gap)
			}
		}
		// Paid at last: a late payment, flagged (refund_late is off).
		paidFrom.Store(int64(len(gw.queries()) + 1))
		time.Sleep(11 * time.Minute)
		synctest.Wait()
		open, _ := jr.OpenOrders(ctx)
		if len(open) != 1 || open[0].State != journal.StateLatePaid {
			t.Fatalf("open orders %+v", open)
		}
		cancel()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	})
}

// TestReconcilerGivesUpAfterWindow: an order that stays unknown for 24 h is
// left open for the operator, and the reconciler stops querying it.
func TestReconcilerGivesUpAfterWindow(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		gw := &fakeGateway{create: iotpay.Result{Outcome: iotpay.OutcomeUnknown, Status: -1, Err: &iotpay.Error{Msg: "gateway timeout"}},
			query: func(int) iotpay.Result {
				return iotpay.Result{Outcome: iotpay.OutcomeUnknown, Status: -1, Err: &iotpay.Error{Msg: "gateway timeout"}}
			}}
		jr, _ := journal.Open(filepath.Join(t.TempDir(), "j.db"), journal.Options{})
		defer jr.Close()
		wallets, _ := payment.NewWallets(payment.DefaultWalletRules())
		rec := newRecorder()
		term, _ := payment.New(payment.DefaultConfig(), payment.Deps{Gateway: gw, Journal: jr, Wallets: wallets, Results: rec})
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error)
		go func() { done <- term.Run(ctx) }()
		<-term.Ready()
		term.RequestSale(ctx, payment.SaleRequest{Amount: 100})
		term.Scan(ctx, payment.Code{Text: "134567890123456789"})
		<-rec.resCh
		time.Sleep(25 * time.Hour)
		n := len(gw.queries())
		time.Sleep(5 * time.Hour)
		if len(gw.queries()) != n {
			t.Fatal("still querying after the reconcile window")
		}
		open, _ := jr.OpenOrders(ctx)
		if len(open) != 1 || open[0].State != journal.StateUnconfirmed {
			t.Fatalf("the order must stay listed as open: %+v", open)
		}
		cancel()
		<-done
	})
}

// TestScriptedSale records the full call sequence of a sale that needs one
// query, and the screens in order.
func TestScriptedSale(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		gw := &fakeGateway{create: pending(), query: func(int) iotpay.Result {
			return paid(2865, 3)
		}}
		jr, _ := journal.Open(filepath.Join(t.TempDir(), "j.db"), journal.Options{})
		defer jr.Close()
		wallets, _ := payment.NewWallets(payment.DefaultWalletRules())
		rec := newRecorder()
		term, _ := payment.New(payment.DefaultConfig(), payment.Deps{Gateway: gw, Journal: jr, Wallets: wallets, Screen: rec, Beeper: rec, Results: rec})
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error)
		go func() { done <- term.Run(ctx) }()
		<-term.Ready()
		synctest.Wait()
		term.Typing(ctx, 28)
		synctest.Wait()
		term.RequestSale(ctx, payment.SaleRequest{Amount: 2865})
		synctest.Wait()
		term.Scan(ctx, payment.Code{Text: "134567890123456789"})
		r := <-rec.resCh
		if r.Outcome != payment.OutcomeApproved || r.PayOrderID != "AM1" {
			t.Fatalf("%+v", r)
		}
		time.Sleep(time.Minute)
		synctest.Wait()
		rec.mu.Lock()
		var kinds []string
		for _, s := range rec.screens {
			kinds = append(kinds, s.Kind.String())
		}
		beeps := append([]payment.Beep(nil), rec.beeps...)
		rec.mu.Unlock()
		want := []string{"idle", "typing", "awaiting_code", "processing", "confirm_on_phone", "approved", "idle"}
		if len(kinds) == len(want)-1 {
			// Screens are latest-wins: "processing", followed at once by
			// the create's "confirm on phone", may never reach the display.
			want = slices.Delete(want, 3, 4)
		}
		if len(kinds) != len(want) {
			t.Fatalf("screens %v, want %v", kinds, want)
		}
		for i := range want {
			if kinds[i] != want[i] {
				t.Fatalf("screens %v, want %v", kinds, want)
			}
		}
		if len(beeps) != 2 || beeps[0] != payment.BeepAccepted || beeps[1] != payment.BeepApproved {
			t.Fatalf("beeps %v", beeps)
		}
		gw.mu.Lock()
		calls := len(gw.calls)
		gw.mu.Unlock()
		if calls != 2 {
			t.Fatalf("gateway calls %v", gw.calls)
		}
		cancel()
		<-done
	})
}

// blockingSink never returns, like a display that stopped reading.
type blockingSink struct{ release chan struct{} }

func (b blockingSink) Show(payment.Screen) error { <-b.release; return nil }
func (b blockingSink) Beep(payment.Beep) error   { <-b.release; return nil }

func TestDeadOutputsNeverBlockASale(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		gw := &fakeGateway{create: iotpay.Result{Outcome: iotpay.OutcomePaid, Status: 2, StatusNested: true, PayOrderID: "AM9", Amount: -1},
			query: func(int) iotpay.Result { return paid(100, 2) }}
		jr, _ := journal.Open(filepath.Join(t.TempDir(), "j.db"), journal.Options{})
		defer jr.Close()
		wallets, _ := payment.NewWallets(payment.DefaultWalletRules())
		rec := newRecorder()
		stuck := blockingSink{release: make(chan struct{})}
		term, _ := payment.New(payment.DefaultConfig(), payment.Deps{Gateway: gw, Journal: jr, Wallets: wallets, Screen: stuck, Beeper: stuck, Results: rec})
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error)
		go func() { done <- term.Run(ctx) }()
		<-term.Ready()
		for i := 0; i < 5; i++ {
			term.RequestSale(ctx, payment.SaleRequest{Amount: 100})
			term.Scan(ctx, payment.Code{Text: "13456789012345678" + string(rune('0'+i))})
			if r := <-rec.resCh; r.Outcome != payment.OutcomeApproved {
				t.Fatalf("sale %d: %+v", i, r)
			}
		}
		close(stuck.release)
		cancel()
		<-done
	})
}
