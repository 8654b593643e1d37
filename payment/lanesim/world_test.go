package lanesim

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/scanpay/scanpay/ecr"
	"github.com/scanpay/scanpay/payment"
	"github.com/scanpay/scanpay/payment/iotpay"
	"github.com/scanpay/scanpay/payment/iotpaysim"
	"github.com/scanpay/scanpay/payment/journal"
)

const (
	mchID = "10000576"
	key   = "SIMKEY1234567890"
)

// transport hands requests to the simulator in-process: no sockets, so the
// fake clock runs freely. A handler that aborts (a dropped connection) is
// a transport error, as the real client would see it.
//
// Each call takes a round trip of fake time (latency), half on the way
// out and half back, as a shop's line to IOTPay does: the lane and the
// register link wait on the gateway for real stretches (a register that
// resets meanwhile meets a link busy with its refund).
type transport struct {
	sim     *iotpaysim.Sim
	latency func() time.Duration
}

// travel waits d of fake time, or until the request is given up.
func travel(req *http.Request, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-req.Context().Done():
		return req.Context().Err()
	}
}

func (tr transport) RoundTrip(req *http.Request) (resp *http.Response, err error) {
	if err := req.Context().Err(); err != nil {
		return nil, err
	}
	rtt := time.Duration(0)
	if tr.latency != nil {
		rtt = tr.latency()
	}
	if err := travel(req, rtt/2); err != nil {
		return nil, err // given up before it reached the gateway
	}
	rec := httptest.NewRecorder()
	aborted := false
	func() {
		defer func() {
			if r := recover(); r != nil {
				aborted = true
			}
		}()
		tr.sim.ServeHTTP(rec, req)
	}()
	if err := travel(req, rtt-rtt/2); err != nil {
		return nil, err // the gateway has it; the reply came after the client gave up
	}
	if aborted {
		return nil, errors.New("read: connection reset by peer")
	}
	return rec.Result(), nil
}

// faultProfile is how hostile the gateway is in one run.
type faultProfile struct {
	name                                           string
	lost, http5xx, slow, refuseQuery, lie, noPayID float64
	misbook                                        float64 // create_order booked for other figures
}

var profiles = []faultProfile{
	{name: "calm"},
	{name: "flaky", lost: 0.05, http5xx: 0.03, slow: 0.02, refuseQuery: 0.05, noPayID: 0.1},
	{name: "hostile", lost: 0.1, http5xx: 0.05, slow: 0.05, refuseQuery: 0.2, lie: 0.1, noPayID: 0.3},
	{name: "refusing", refuseQuery: 0.7, noPayID: 0.5},
	{name: "lying", lie: 0.5, lost: 0.05, misbook: 0.1},
}

var refuseCodes = []string{"0010", "0011", "0012", "0013", "0014", "0015", "0110", "0111", "0118"}

// world is one simulated lane and everything around it.
type world struct {
	t       *testing.T
	seed    uint64
	rng     *rand.Rand // the driver's choices
	dir     string
	sim     *iotpaysim.Sim
	profile faultProfile
	faults  atomic.Bool
	gwMu    sync.Mutex
	gwRng   *rand.Rand // the gateway's faults
	offset  atomic.Int64
	logs    *observer.ObservedLogs
	log     *zap.Logger
	verbose bool

	ctx        context.Context // ends with the run
	failAttach atomic.Bool     // the next code attach fails as a dying disk would
	lane       *laneRun
	crashes    int
	steps      int
	codeSeq    int
	codes      []string // every payment code scanned, for the leak checks
	frames     []string // every result payload the register received
	requests   []*request
	screens    *screens
	saleNo     int
	refSeq     int
	clockOK    atomic.Bool
}

// laneRun is one life of the lane, from start to stop or crash.
type laneRun struct {
	jr       *journal.Journal
	term     *payment.Terminal
	link     *ecr.Link
	cancel   context.CancelFunc
	termDone chan error
	linkDone chan error
	reg      *registerEnd
	ln       *pipeListener
	once     sync.Once
	termErr  error
}

// shutdown stops this life of the lane (once) and returns how the engine
// ended.
func (lr *laneRun) shutdown() error {
	lr.once.Do(func() {
		lr.cancel()
		lr.ln.Close()
		lr.termErr = <-lr.termDone
		<-lr.linkDone
		if lr.reg != nil {
			lr.reg.close()
		}
		lr.jr.Close()
	})
	return lr.termErr
}

// screens records what the display showed.
type screens struct {
	mu  sync.Mutex
	all []payment.Screen
}

func (s *screens) Show(sc payment.Screen) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.all = append(s.all, sc)
	return nil
}

func (s *screens) Beep(payment.Beep) error { return nil }

func newWorld(t *testing.T, seed uint64, verbose bool) *world {
	w := &world{t: t, seed: seed, rng: rand.New(rand.NewPCG(seed, 0x5ca9)), dir: memDir(t), screens: &screens{}, verbose: verbose}
	w.gwRng = rand.New(rand.NewPCG(seed, 0x10796a7))
	w.profile = profiles[w.rng.IntN(len(profiles))]
	core, logs := observer.New(zapcore.DebugLevel)
	w.logs = logs
	if verbose {
		dev, _ := zap.NewDevelopment()
		core = zapcore.NewTee(core, dev.Core())
	}
	w.log = zap.New(core)
	w.sim = iotpaysim.New(iotpaysim.Options{MchID: mchID, Key: key, Logger: w.log.Named("gateway")})
	w.sim.SetFaults(w.gatewayFault)
	w.faults.Store(true)
	w.clockOK.Store(true)
	var cancel context.CancelFunc
	w.ctx, cancel = context.WithCancel(context.Background())
	// A failed check stops the run at once: the lane must still stop, or
	// the bubble reports a deadlock instead of the failure.
	t.Cleanup(func() {
		cancel()
		if w.lane != nil {
			w.lane.shutdown()
			w.lane = nil
		}
	})
	return w
}

// memDir is a temporary directory in memory when the machine has one: the
// simulation tests the engine's logic, not the disk, and thousands of
// seeds must not wait on fsync. (The crash and power-cut tests use disks.)
func memDir(t *testing.T) string {
	if fi, err := os.Stat("/dev/shm"); err == nil && fi.IsDir() {
		if dir, err := os.MkdirTemp("/dev/shm", "lanesim-"); err == nil {
			t.Cleanup(func() { os.RemoveAll(dir) })
			return dir
		}
	}
	return t.TempDir()
}

// wall is the lane's clock: the fake time plus the steps the run made.
func (w *world) wall() time.Time {
	return time.Now().Round(0).Add(time.Duration(w.offset.Load()))
}

// gatewayLatency is one call's round trip: 50 to 800 ms.
func (w *world) gatewayLatency() time.Duration {
	w.gwMu.Lock()
	defer w.gwMu.Unlock()
	return 50*time.Millisecond + time.Duration(w.gwRng.Int64N(int64(750*time.Millisecond)))
}

func (w *world) gatewayFault(endpoint string, _ map[string]string) iotpaysim.Fault {
	if !w.faults.Load() {
		return iotpaysim.Fault{}
	}
	w.gwMu.Lock()
	defer w.gwMu.Unlock()
	p, r := w.profile, w.gwRng
	var f iotpaysim.Fault
	switch {
	case r.Float64() < p.lost:
		f.DropReply = true
	case r.Float64() < p.http5xx:
		f.HTTPStatus = 502 + r.IntN(3)
	case r.Float64() < p.slow:
		f.Delay = 45 * time.Second
	case endpoint == "query_order" && r.Float64() < p.refuseQuery:
		f.Refuse = refuseCodes[r.IntN(len(refuseCodes))]
	case endpoint == "query_order" && r.Float64() < p.lie:
		f.Lie = []iotpaysim.Lie{iotpaysim.LieAmount, iotpaysim.LieCurrency, iotpaysim.LieOrder}[r.IntN(3)]
	}
	if r.Float64() < p.noPayID {
		f.NoPayOrderID = true
	}
	if endpoint == "create_order" && r.Float64() < p.misbook {
		f.Misbook = []iotpaysim.Lie{iotpaysim.LieAmount, iotpaysim.LieCurrency}[r.IntN(2)]
	}
	return f
}

// start brings the lane up on its journal, as systemd would after a
// crash, and connects the register.
func (w *world) start() {
	t := w.t
	jr, err := journal.Open(filepath.Join(w.dir, "journal.db"), journal.Options{Now: w.wall, TrackCleanStop: true, Exclusive: true})
	if err != nil {
		t.Fatalf("seed %d: journal: %v", w.seed, err)
	}
	client := w.client()
	wallets, _ := payment.NewWallets(payment.DefaultWalletRules())
	cfg := payment.DefaultConfig()
	cfg.TerminalID = "SIM"
	cfg.RefundLate = true
	var link *ecr.Link
	results := resultSink{&link}
	term, err := payment.New(cfg, payment.Deps{Gateway: client, Journal: &dyingJournal{Journal: jr, w: w}, Wallets: wallets, Screen: w.screens, Beeper: w.screens,
		Results: results, Logger: w.log.Named("lane"), Now: w.wall, ClockSynced: func() (bool, error) { return w.clockOK.Load(), nil }})
	if err != nil {
		t.Fatal(err)
	}
	link = ecr.NewLink(ecr.Config{Currency: "CAD", AllowRefunds: true, Timeout: 3 * time.Second, Logger: w.log.Named("ecr"), Now: w.wall}, term)
	ctx, cancel := context.WithCancel(context.Background())
	lr := &laneRun{jr: jr, term: term, link: link, cancel: cancel, termDone: make(chan error, 1), linkDone: make(chan error, 1)}
	lr.ln = newPipeListener()
	go func() { lr.termDone <- term.Run(ctx) }()
	go func() { lr.linkDone <- link.RunTCP(ctx, lr.ln) }()
	w.lane = lr
	w.connect()
	select {
	case <-term.Ready():
	case <-term.Done():
		t.Fatalf("seed %d: the lane stopped while starting: %v", w.seed, lr.shutdown())
	case <-time.After(30 * time.Minute):
		t.Fatalf("seed %d: the lane never became ready", w.seed)
	}
}

// connect (re)connects the register to the lane when its line dropped.
func (w *world) connect() *registerEnd {
	lr := w.lane
	if lr.reg != nil && !lr.reg.dead() {
		return lr.reg
	}
	if lr.reg != nil {
		lr.reg.close()
	}
	c := lr.ln.dial()
	if c == nil {
		w.t.Fatalf("seed %d: the register cannot connect", w.seed)
	}
	lr.reg = newRegisterEnd(c)
	return lr.reg
}

// dyingJournal fails a code's attach once when the world asks, as an fsync
// error would.
type dyingJournal struct {
	*journal.Journal
	w *world
}

func (d *dyingJournal) AttachCode(ctx context.Context, no string, c journal.Code) (journal.Order, error) {
	if d.w.failAttach.CompareAndSwap(true, false) {
		return journal.Order{}, fmt.Errorf("%w: fsync: input/output error", journal.ErrStorage)
	}
	return d.Journal.AttachCode(ctx, no, c)
}

// restartAfterFailure waits for the lane to stop on its storage failure
// (as the daemon exits non-zero) and starts it again, as systemd would.
func (w *world) restartAfterFailure() {
	lr := w.lane
	select {
	case <-lr.term.Done():
	case <-time.After(time.Minute):
		w.t.Fatalf("seed %d: the lane did not stop on a storage failure", w.seed)
	}
	w.lane = nil
	var fe *payment.FatalError
	if err := lr.shutdown(); !errors.As(err, &fe) {
		w.t.Fatalf("seed %d: a storage failure ended the lane with %v, want a fatal error", w.seed, err)
	}
	w.crashes++
	w.start()
}

// resultSink hands the engine's results to the link built after it.
type resultSink struct{ link **ecr.Link }

func (r resultSink) Result(res payment.SaleResult) error { return (*r.link).Result(res) }

// client is the lane's gateway client, over the in-process transport.
func (w *world) client() *iotpay.Client {
	c, err := iotpay.New(iotpay.Config{BaseURL: "http://gateway.sim", MchID: mchID, Key: key, JobNo: "cashier", NotifyURL: "http://n",
		Subject: "scanpay", Body: "sim", ClientIP: "127.0.0.1", Timeout: 30 * time.Second, RequireSignedReplies: true,
		HTTPClient: &http.Client{Transport: transport{sim: w.sim, latency: w.gatewayLatency}}})
	if err != nil {
		w.t.Fatal(err)
	}
	return c
}

// crash stops the lane abruptly: whatever was in flight is cut off, the
// register's line drops, and only the journal and the gateway remain.
func (w *world) crash() {
	lr := w.lane
	if lr == nil {
		return
	}
	w.crashes++
	w.lane = nil
	if err := lr.shutdown(); err != nil {
		w.t.Fatalf("seed %d: the lane failed: %v", w.seed, err)
	}
	// Sometimes the Pi boots with its clock not synchronised yet.
	if w.rng.IntN(4) == 0 {
		w.clockOK.Store(false)
		d := time.Duration(5+w.rng.IntN(120)) * time.Second
		go func() {
			select {
			case <-time.After(d):
			case <-w.ctx.Done():
			}
			w.clockOK.Store(true)
		}()
	}
	w.start()
}

// stop ends the lane cleanly.
func (w *world) stop() {
	lr := w.lane
	w.lane = nil
	if err := lr.shutdown(); err != nil {
		w.t.Errorf("seed %d: the lane failed at the end: %v", w.seed, err)
	}
}

// settle lets every goroutine run until all wait on time or I/O.
func settle() { synctest.Wait() }

// waitIdle waits (fake time) until the lane takes a sale again, or limit.
func (w *world) waitIdle(limit time.Duration) bool {
	deadline := time.Now().Add(limit)
	for {
		settle()
		if st := w.lane.term.State(); st == payment.StateIdle {
			return true
		}
		if !time.Now().Before(deadline) {
			return false
		}
		time.Sleep(time.Second)
	}
}

// maxSeq is the journal's newest order sequence.
func (w *world) maxSeq() uint64 {
	orders, err := w.lane.jr.Orders(context.Background(), journal.Filter{})
	if err != nil {
		w.t.Fatalf("seed %d: %v", w.seed, err)
	}
	var m uint64
	for _, o := range orders {
		m = max(m, o.Seq)
	}
	return m
}

// refundCount is how many refunds the journal holds.
func (w *world) refundCount() int {
	rs, err := w.lane.jr.Refunds(context.Background(), "")
	if err != nil {
		w.t.Fatalf("seed %d: %v", w.seed, err)
	}
	return len(rs)
}

// newCode is a fresh WeChat payment code.
func (w *world) newCode() string {
	w.codeSeq++
	c := fmt.Sprintf("13%08d%08d", w.seed%100000000, w.codeSeq)
	w.codes = append(w.codes, c)
	return c
}

// amount picks an amount whose last two digits choose a gateway scenario.
func (w *world) amount() int64 {
	endings := []struct {
		end    int64
		weight int
	}{{0, 48}, {51, 8}, {52, 8}, {53, 5}, {54, 5}, {55, 6}, {56, 5}, {57, 4}, {58, 5}, {59, 4}}
	total := 0
	for _, e := range endings {
		total += e.weight
	}
	n := w.rng.IntN(total)
	end := int64(0)
	for _, e := range endings {
		if n < e.weight {
			end = e.end
			if end == 0 {
				end = int64(w.rng.IntN(50))
			}
			break
		}
		n -= e.weight
	}
	return int64(1+w.rng.IntN(300))*100 + end
}
