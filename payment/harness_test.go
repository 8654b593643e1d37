package payment_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest"
	"go.uber.org/zap/zaptest/observer"

	"github.com/scanpay/scanpay/payment"
	"github.com/scanpay/scanpay/payment/iotpay"
	"github.com/scanpay/scanpay/payment/iotpaysim"
	"github.com/scanpay/scanpay/payment/journal"
)

func TestMain(m *testing.M) {
	if crashChild() {
		return
	}
	goleak.VerifyTestMain(m)
}

const (
	mchID = "10000576"
	key   = "TESTKEY1234567890"
)

// recorder is a call-recording fake for the three outputs.
type recorder struct {
	mu      sync.Mutex
	screens []payment.Screen
	beeps   []payment.Beep
	results []payment.SaleResult
	resCh   chan payment.SaleResult
}

func newRecorder() *recorder { return &recorder{resCh: make(chan payment.SaleResult, 100)} }

func (r *recorder) Show(s payment.Screen) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.screens = append(r.screens, s)
	return nil
}

func (r *recorder) Beep(b payment.Beep) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.beeps = append(r.beeps, b)
	return nil
}

func (r *recorder) Result(s payment.SaleResult) error {
	r.mu.Lock()
	r.results = append(r.results, s)
	r.mu.Unlock()
	r.resCh <- s
	return nil
}

func (r *recorder) sawScreen(k payment.ScreenKind) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, s := range r.screens {
		if s.Kind == k {
			return true
		}
	}
	return false
}

func (r *recorder) sawBeep(b payment.Beep) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, x := range r.beeps {
		if x == b {
			return true
		}
	}
	return false
}

type harness struct {
	t        *testing.T
	sim      *iotpaysim.Sim
	clock    *iotpaysim.FakeClock
	srv      *httptest.Server
	client   *iotpay.Client
	jr       *journal.Journal
	jpath    string
	term     *payment.Terminal
	rec      *recorder
	logs     *observer.ObservedLogs // the terminal's log, to wait on what it did
	cfg      payment.Config
	cancel   context.CancelFunc
	runErr   chan error
	wrapJ    func(payment.Journal) payment.Journal
	screen   payment.ScreenSink // instead of the recorder
	gw       payment.Gateway
	obs      payment.Observer
	now      func() time.Time // the terminal's wall clock; nil: time.Now
	codeSeq  atomic.Int64
	stopOnce sync.Once
}

type option func(*harness)

func withConfig(f func(*payment.Config)) option { return func(h *harness) { f(&h.cfg) } }

func withNow(now func() time.Time) option { return func(h *harness) { h.now = now } }

func withJournal(wrap func(payment.Journal) payment.Journal) option {
	return func(h *harness) { h.wrapJ = wrap }
}

func withScreen(s payment.ScreenSink) option { return func(h *harness) { h.screen = s } }

func withGateway(gw func(h *harness) payment.Gateway) option {
	return func(h *harness) { h.gw = gw(h) }
}

func testConfig() payment.Config {
	cfg := payment.DefaultConfig()
	cfg.TerminalID = "T01"
	cfg.PollInterval = 5 * time.Millisecond
	cfg.PollAttempts = 10
	// Long enough for the recorder to see a screen before the next one
	// replaces it (the display keeps only the newest) on a busy machine.
	cfg.NoticeFor = 50 * time.Millisecond
	cfg.ResultFor = 100 * time.Millisecond
	cfg.ReconcileMin = 5 * time.Millisecond
	cfg.ReconcileMax = 20 * time.Millisecond
	cfg.NotFoundFinalAfter = 150 * time.Millisecond
	return cfg
}

func newHarness(t *testing.T, opts ...option) *harness {
	t.Helper()
	h := &harness{t: t, cfg: testConfig()}
	h.clock = iotpaysim.NewFakeClock(time.Now())
	h.sim = iotpaysim.New(iotpaysim.Options{MchID: mchID, Key: key, Clock: h.clock})
	h.srv = httptest.NewServer(h.sim)
	t.Cleanup(h.srv.Close)
	var err error
	h.client, err = iotpay.New(iotpay.Config{BaseURL: h.srv.URL, MchID: mchID, Key: key, JobNo: "cashier", NotifyURL: "http://localhost/n",
		Subject: "scanpay", Body: "test", ClientIP: "127.0.0.1", Timeout: 300 * time.Millisecond, RequireSignedReplies: true})
	if err != nil {
		t.Fatal(err)
	}
	h.jpath = filepath.Join(t.TempDir(), "journal.db")
	for _, o := range opts {
		o(h)
	}
	h.start()
	return h
}

// start opens the journal and runs a terminal on it.
func (h *harness) start() {
	t := h.t
	var err error
	h.jr, err = journal.Open(h.jpath, journal.Options{Exclusive: true}) // as the daemon opens it
	if err != nil {
		t.Fatal(err)
	}
	wallets, _ := payment.NewWallets(payment.DefaultWalletRules())
	var jr payment.Journal = h.jr
	if h.wrapJ != nil {
		jr = h.wrapJ(jr)
	}
	var gw payment.Gateway = h.client
	if h.gw != nil {
		gw = h.gw
	}
	h.rec = newRecorder()
	var screen payment.ScreenSink = h.rec
	if h.screen != nil {
		screen = h.screen
	}
	seen, logs := observer.New(zap.InfoLevel)
	h.logs = logs
	h.term, err = payment.New(h.cfg, payment.Deps{Gateway: gw, Journal: jr, Wallets: wallets,
		Screen: screen, Beeper: h.rec, Results: h.rec, Logger: zap.New(zapcore.NewTee(zaptest.NewLogger(t).Core(), seen)), Observer: h.obs, Now: h.now})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	h.cancel = cancel
	h.runErr = make(chan error, 1)
	go func() { h.runErr <- h.term.Run(ctx) }()
	h.stopOnce = sync.Once{}
	t.Cleanup(func() { h.stop() })
}

// stop ends the terminal and returns Run's error.
func (h *harness) stop() error {
	var err error
	h.stopOnce.Do(func() {
		h.cancel()
		err = <-h.runErr
		h.jr.Close()
	})
	return err
}

func (h *harness) restart() {
	if err := h.stop(); err != nil {
		h.t.Fatalf("run: %v", err)
	}
	h.start()
}

func (h *harness) ready() {
	h.t.Helper()
	select {
	case <-h.term.Ready():
	case <-time.After(10 * time.Second):
		h.t.Fatal("terminal never became ready")
	}
}

// code returns a fresh WeChat code.
func (h *harness) code() string { return fmt.Sprintf("13%016d", h.codeSeq.Add(1)) }

// sale runs one sale and returns the first result.
func (h *harness) sale(amount int64, code string) payment.SaleResult {
	h.t.Helper()
	h.ready()
	ctx := context.Background()
	if err := h.term.RequestSale(ctx, payment.SaleRequest{Amount: amount, Source: payment.SourceECR, ECRRef: fmt.Sprintf("REF%d", amount)}); err != nil {
		h.t.Fatalf("request sale: %v", err)
	}
	if err := h.term.Scan(ctx, payment.Code{Text: code, Source: "test", At: time.Now()}); err != nil {
		h.t.Fatalf("scan: %v", err)
	}
	return h.result()
}

// result waits for the next result and for its commit: results go out
// before their commit, and tests read the journal next.
func (h *harness) result() payment.SaleResult {
	h.t.Helper()
	r := h.resultNow()
	// LastResult answers only once the last announced outcome is on disk.
	if _, err := h.term.LastResult(context.Background(), "\x00none"); err != nil && !errors.Is(err, payment.ErrNoOrder) {
		h.t.Fatalf("waiting for the commit: %v", err)
	}
	return r
}

// resultNow is the next result as it goes out, before its commit.
func (h *harness) resultNow() payment.SaleResult {
	h.t.Helper()
	select {
	case r := <-h.rec.resCh:
		return r
	case <-time.After(10 * time.Second):
		h.t.Fatal("no result")
	}
	return payment.SaleResult{}
}

// order reads an order from the journal (through a second connection, as
// an operator's sqlite3 would).
func (h *harness) order(no string) journal.Order {
	h.t.Helper()
	o, err := h.jr.Get(context.Background(), no)
	if err != nil {
		h.t.Fatal(err)
	}
	return o
}

// eventually waits for cond, failing with msg.
func (h *harness) eventually(msg string, cond func() bool) {
	h.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			h.t.Fatal("timed out waiting: " + msg)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// agree checks that the journal and the simulator's ledger tell the same
// story: every gateway order is journaled, and paid exactly when the
// journal says PAID or LATE_PAID.
func (h *harness) agree() {
	h.t.Helper()
	ctx := context.Background()
	for _, so := range h.sim.Orders() {
		jo, err := h.jr.Get(ctx, so.MchOrderNo)
		if err != nil {
			h.t.Fatalf("gateway order %s not in journal: %v", so.MchOrderNo, err)
		}
		gwPaid := so.Status == 2 || so.Status == 3
		jPaid := jo.State == journal.StatePaid || jo.State == journal.StateLatePaid
		if jPaid && !gwPaid {
			h.t.Fatalf("journal says %s for %s but the gateway status is %d", jo.State, so.MchOrderNo, so.Status)
		}
		if gwPaid && !jPaid && !jo.State.Open() {
			h.t.Fatalf("gateway paid %s but the journal settled it as %s", so.MchOrderNo, jo.State)
		}
	}
}

// scriptGateway wraps a gateway and lets a test replace single calls.
type scriptGateway struct {
	payment.Gateway
	create func(ctx context.Context, r iotpay.CreateRequest) (iotpay.Result, bool)
	query  func(ctx context.Context, q iotpay.QueryRequest) (iotpay.Result, bool)
	refund func(ctx context.Context, r iotpay.RefundRequest) (iotpay.Result, bool)
}

func (g *scriptGateway) QueryOrder(ctx context.Context, q iotpay.QueryRequest) iotpay.Result {
	if g.query != nil {
		if res, ok := g.query(ctx, q); ok {
			return res
		}
	}
	return g.Gateway.QueryOrder(ctx, q)
}

func (g *scriptGateway) CreateOrder(ctx context.Context, r iotpay.CreateRequest) iotpay.Result {
	if g.create != nil {
		if res, ok := g.create(ctx, r); ok {
			return res
		}
	}
	return g.Gateway.CreateOrder(ctx, r)
}

func (g *scriptGateway) RefundOrder(ctx context.Context, r iotpay.RefundRequest) iotpay.Result {
	if g.refund != nil {
		if res, ok := g.refund(ctx, r); ok {
			return res
		}
	}
	return g.Gateway.RefundOrder(ctx, r)
}

// failJournal fails chosen writes with a storage error, as a full disk or
// an fsync EIO would.
type failJournal struct {
	payment.Journal
	failArm        atomic.Bool
	failAttach     atomic.Bool
	failTransition atomic.Bool // Transition and Settle
	failSync       atomic.Bool
}

var errDisk = fmt.Errorf("%w: write: input/output error", journal.ErrStorage)

func (f *failJournal) ArmOrder(ctx context.Context, a journal.Armed, num func(uint64) string) (journal.Order, error) {
	if f.failArm.Load() {
		return journal.Order{}, errDisk
	}
	return f.Journal.ArmOrder(ctx, a, num)
}

func (f *failJournal) AttachCode(ctx context.Context, no string, c journal.Code) (journal.Order, error) {
	if f.failAttach.Load() {
		return journal.Order{}, errDisk
	}
	return f.Journal.AttachCode(ctx, no, c)
}

func (f *failJournal) Transition(ctx context.Context, no string, from, to journal.State, u journal.Update) (journal.Order, error) {
	if f.failTransition.Load() {
		return journal.Order{}, errDisk
	}
	return f.Journal.Transition(ctx, no, from, to, u)
}

func (f *failJournal) Settle(ctx context.Context, no string, from, to journal.State, u journal.Update) (journal.Order, error) {
	if f.failTransition.Load() {
		return journal.Order{}, errDisk
	}
	return f.Journal.Settle(ctx, no, from, to, u)
}

func (f *failJournal) Sync(ctx context.Context) error {
	if f.failSync.Load() {
		return errDisk
	}
	return f.Journal.Sync(ctx)
}

func isFatal(err error) bool {
	var fe *payment.FatalError
	return errors.As(err, &fe)
}

var _ http.Handler = (*iotpaysim.Sim)(nil)
