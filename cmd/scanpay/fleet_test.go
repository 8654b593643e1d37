//go:build !nohq

package main

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/scanpay/scanpay/config"
	"github.com/scanpay/scanpay/fleet"
	"github.com/scanpay/scanpay/fleet/fleettest"
	"github.com/scanpay/scanpay/hq"
	"github.com/scanpay/scanpay/hq/pgtest"
	"github.com/scanpay/scanpay/payment"
	"github.com/scanpay/scanpay/payment/iotpaysim"
	"github.com/scanpay/scanpay/payment/journal"
)

// The fleet scenario: lanes (the daemon's own wiring, [fleet] on) sell
// against the gateway simulator, publish to a three-node JetStream cluster
// (stream replicated three times), and the real scanpay binary runs head
// office into a real PostgreSQL. Meanwhile a NATS node is killed and comes
// back, head office is SIGKILLed and restarted, and one lane's link is cut
// and restored. At the end PostgreSQL must hold exactly every lane's
// journal, and the fleet report must add up to the lanes' reports.
//
//	SCANPAY_FLEET_LANES, SCANPAY_FLEET_SALES  size (default 4 × 60 here;
//	make test-fleet runs 20 × 500)
//	SCANPAY_FLEET_SEED                        replay a failure's seed

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

// hqProc is head office as a separate process: the scanpay-hq binary.
type hqProc struct {
	t      *testing.T
	config string
	cmd    *exec.Cmd
	logs   *safeBuffer
	exited chan error
}

func (h *hqProc) start() {
	h.t.Helper()
	h.logs = newSafeBuffer()
	h.cmd = exec.Command(hqBinary, "run", "--config", h.config)
	h.cmd.Stdout, h.cmd.Stderr = h.logs, h.logs
	if err := h.cmd.Start(); err != nil {
		h.t.Fatal(err)
	}
	h.exited = make(chan error, 1)
	cmd := h.cmd
	go func() { h.exited <- cmd.Wait() }()
}

func (h *hqProc) kill() {
	h.cmd.Process.Signal(syscall.SIGKILL)
	<-h.exited
}

// stop ends head office cleanly and returns its exit error.
func (h *hqProc) stop() error {
	h.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-h.exited:
		return err
	case <-time.After(20 * time.Second):
		h.kill()
		return errors.New("hq did not stop on SIGTERM")
	}
}

// fleetAmount picks a sale's amount: its last two digits choose the
// simulator's behaviour.
func fleetAmount(r *rand.Rand) int64 {
	base := int64(1+r.IntN(80)) * 100
	switch p := r.IntN(100); {
	case p < 8:
		return base + 51 // declined
	case p < 16:
		return base + 55 // reply lost: found paid by query
	case p < 20:
		return base + 52 // customer confirms on the phone
	case p < 24:
		return base + 54 // paid after the lane gave up: a late payment, refunded
	}
	return base + int64(r.IntN(50)) // paid at once
}

type fleetLaneT struct {
	id      string
	dir     string
	d       *daemon
	results resultChan
	done    atomic.Int64
	proxies []*fleettest.Proxy
}

func TestFleetScenario(t *testing.T) {
	nLanes := envInt("SCANPAY_FLEET_LANES", 4)
	nSales := envInt("SCANPAY_FLEET_SALES", 60)
	seed := uint64(time.Now().UnixNano())
	if s, err := strconv.ParseUint(os.Getenv("SCANPAY_FLEET_SEED"), 10, 64); err == nil {
		seed = s
	}
	t.Logf("fleet scenario: %d lanes × %d sales, seed %d (SCANPAY_FLEET_SEED=%d replays it)", nLanes, nSales, seed, seed)
	began := time.Now()
	ctx := context.Background()

	pg := pgtest.Start(t, pgtest.Options{})
	dsn := pg.NewDB(t)
	// NoAdvertise: clients know only the URLs they were given, so a lane
	// behind a cut proxy cannot reach the cluster some other way.
	cluster := fleettest.Start(t, 3, func(_ int, o *server.Options) { o.Cluster.NoAdvertise = true })
	dir := t.TempDir()

	// Head office: the real binary, three replicas, in its own process.
	hqConfig := filepath.Join(dir, "hq.toml")
	quoted := make([]string, 0, 3)
	for _, u := range cluster.URLs() {
		quoted = append(quoted, strconv.Quote(u))
	}
	if err := os.WriteFile(hqConfig, []byte(fmt.Sprintf(`
[nats]
servers = [%s]
replicas = 3
batch = 128
ack_wait = "3s"
[postgres]
url = %q
[lanes]
silent_after = "30s"
[log]
format = "json"
level = %q
`, strings.Join(quoted, ", "), dsn, cmp.Or(os.Getenv("SCANPAY_FLEET_HQ_LOG"), "info"))), 0o600); err != nil {
		t.Fatal(err)
	}
	office := &hqProc{t: t, config: hqConfig}
	office.start()
	store, err := hq.OpenStore(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	defer func() {
		if t.Failed() || os.Getenv("SCANPAY_FLEET_HQ_LOG") == "debug" {
			t.Logf("head office log (tail):\n%s", tail(office.logs.String(), 400))
		}
	}()

	// The gateway; its clock runs 100× faster than real time so late
	// payments (90 s) turn up within a second.
	clock := iotpaysim.NewFakeClock(time.Now())
	simURL, closeSim, sim := startSim(t, clock)
	defer closeSim()
	runCtx, stopAll := context.WithCancel(ctx)
	defer stopAll()
	var bg sync.WaitGroup
	defer bg.Wait()
	bg.Add(1)
	go func() {
		defer bg.Done()
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-runCtx.Done():
				return
			case <-tick.C:
				clock.Advance(time.Second)
			}
		}
	}()

	// The lanes.
	lanes := make([]*fleetLaneT, nLanes)
	laneErrs := make(chan error, nLanes)
	var laneWG sync.WaitGroup
	for i := range lanes {
		l := &fleetLaneT{id: fmt.Sprintf("L%02d", i), dir: filepath.Join(dir, fmt.Sprintf("lane%02d", i)), results: make(resultChan, 16)}
		lanes[i] = l
		servers := cluster.URLs()
		if i == 0 { // the lane whose link is cut: through proxies
			servers = nil
			for _, u := range cluster.URLs() {
				p := fleettest.NewProxy(t, strings.TrimPrefix(u, "nats://"))
				l.proxies = append(l.proxies, p)
				servers = append(servers, "nats://"+p.Addr())
			}
		}
		cfg := config.Default()
		cfg.Terminal.ID = l.id
		cfg.Gateway.URL, cfg.Gateway.MchID, cfg.Gateway.JobNo = simURL, "10000576", "cashier"
		cfg.Gateway.PollInterval = config.Duration{Duration: 5 * time.Millisecond}
		cfg.Gateway.PollAttempts = 10
		cfg.Gateway.Timeout = config.Duration{Duration: 5 * time.Second}
		cfg.Gateway.RefundLate = true
		cfg.Terminal.ResultTime = config.Duration{Duration: time.Millisecond}
		cfg.Journal.Path = filepath.Join(l.dir, "journal.db")
		cfg.Fleet = &config.Fleet{Servers: servers, Stream: "SCANPAY", SubjectPrefix: "scanpay", MaxBacklog: 100000,
			Heartbeat: config.Duration{Duration: time.Second}}
		log := zap.NewNop()
		if testing.Verbose() {
			log = zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel)).With(zap.String("lane", l.id))
		}
		d, err := build(cfg, "TESTKEY1234567890", log, overrides{noScanner: true, results: []payment.ResultSink{l.results}, version: "test",
			clockSynced: func() (bool, error) { return true, nil },
			fleetTune: func(c *fleet.Config) {
				c.Poll, c.RetryMin, c.RetryMax, c.AckWait = 200*time.Millisecond, 50*time.Millisecond, time.Second, 3*time.Second
				c.Link.ReconnectMin, c.Link.ReconnectMax = 50*time.Millisecond, time.Second
			}})
		if err != nil {
			t.Fatal(err)
		}
		l.d = d
		laneWG.Add(1)
		go func() {
			defer laneWG.Done()
			if err := d.run(runCtx); err != nil {
				laneErrs <- fmt.Errorf("lane %s: %w", l.id, err)
			}
		}()
	}
	defer laneWG.Wait()
	defer stopAll()

	// The cashiers. They sell up to gate, which opens as each fault is
	// done, so every fault hits the run at its point however fast sales go.
	var sold, gate atomic.Int64
	total := int64(nLanes * nSales)
	gate.Store(total / 10)
	var cashiers sync.WaitGroup
	cashierErr := make(chan error, nLanes)
	for i, l := range lanes {
		cashiers.Add(1)
		go func() {
			defer cashiers.Done()
			if err := l.sell(runCtx, i, nSales, rand.New(rand.NewPCG(seed, uint64(i))), &sold, &gate); err != nil {
				cashierErr <- fmt.Errorf("lane %s: %w", l.id, err)
				stopAll()
			}
		}()
	}

	// The faults, each once the run has reached a point and the previous
	// fault has had time to matter.
	type step struct {
		at    float64     // share of all sales made
		ready func() bool // and this holds (nil: nothing more)
		name  string
		do    func()
	}
	var cutAt, cutBacklog int64
	var mark time.Time
	var applied int64
	consuming := func() bool {
		// True once head office has written more than before the last fault.
		n, _ := store.EventCount(ctx, "")
		return n > applied
	}
	after := func(d time.Duration) func() bool { return func() bool { return time.Since(mark) >= d } }
	steps := []step{
		// A replicated stream is placed on three live nodes: kill one only
		// once head office has created it and events flow.
		{0.10, consuming, "NATS node n2 killed", func() { cluster.Kill(1) }},
		{0.20, consuming, "head office SIGKILLed while consuming", office.kill},
		{0.30, after(time.Second), "head office restarted", office.start},
		{0.40, nil, "lane L00's link cut", func() {
			for _, p := range lanes[0].proxies {
				p.Cut()
			}
			cutAt = lanes[0].done.Load()
		}},
		{0.50, after(time.Second), "NATS node n2 back", func() { cluster.Restart(1) }},
		{0.70, func() bool { return lanes[0].done.Load()-cutAt >= int64(nSales)/5 }, "lane L00's link restored", func() {
			s, err := lanes[0].d.fleet.out.Stats(ctx)
			if err != nil {
				t.Error(err)
			}
			cutBacklog = s.Backlog
			for _, p := range lanes[0].proxies {
				p.Restore()
			}
		}},
	}
	allSold := make(chan struct{})
	go func() { cashiers.Wait(); close(allSold) }()
	for i, s := range steps {
		gate.Store(int64(s.at * float64(total)))
		deadline := time.Now().Add(2 * time.Minute)
		for float64(sold.Load()) < s.at*float64(total) || (s.ready != nil && !s.ready()) {
			if time.Now().After(deadline) {
				var backlogs []string
				for _, l := range lanes {
					st, _ := l.d.fleet.out.Stats(ctx)
					backlogs = append(backlogs, fmt.Sprintf("%s:%d", l.id, st.Backlog))
				}
				t.Fatalf("%q not reached in 2 minutes: %d/%d sales, backlogs %v", s.name, sold.Load(), total, backlogs)
			}
			select {
			case <-allSold:
				t.Fatalf("sales ended before %q", s.name)
			case err := <-cashierErr:
				t.Fatal(err)
			case err := <-laneErrs:
				t.Fatal(err)
			case <-time.After(5 * time.Millisecond):
			}
		}
		applied, _ = store.EventCount(ctx, "")
		s.do()
		mark = time.Now()
		next := total
		if i+1 < len(steps) {
			next = int64(steps[i+1].at * float64(total))
		}
		gate.Store(next)
		t.Logf("%6.1fs  %5d/%d sales  %s", time.Since(began).Seconds(), sold.Load(), total, s.name)
	}
	select {
	case <-allSold:
	case err := <-cashierErr:
		t.Fatal(err)
	case err := <-laneErrs:
		t.Fatal(err)
	}
	t.Logf("%6.1fs  all %d sales done", time.Since(began).Seconds(), total)
	if lanes[0].done.Load()-cutAt < int64(float64(nSales)*0.2) || cutBacklog == 0 {
		t.Fatalf("lane L00 sold %d while cut off with %d events waiting: sales must go on without head office",
			lanes[0].done.Load()-cutAt, cutBacklog)
	}

	// Every late payment is found and refunded, then head office catches up.
	waitFor(t, 3*time.Minute, "every lane settled", func() bool {
		for _, l := range lanes {
			if open, err := l.d.jr.OpenOrders(ctx); err != nil || len(open) > 0 {
				return false
			}
		}
		return true
	})
	waitFor(t, 3*time.Minute, "head office has every lane's journal", func() bool {
		for _, l := range lanes {
			if diff := compareLane(ctx, store, l.d.jr, l.id); diff != "" {
				return false
			}
		}
		return true
	})
	t.Logf("%6.1fs  head office matches every lane", time.Since(began).Seconds())

	// Exactly: every event stored once, none dropped, nothing left behind.
	var events, late, refunds int64
	for _, l := range lanes {
		if diff := compareLane(ctx, store, l.d.jr, l.id); diff != "" {
			t.Fatalf("lane %s: %s", l.id, diff)
		}
		waitFor(t, 30*time.Second, "lane "+l.id+" outbox drained", func() bool {
			s, err := l.d.fleet.out.Stats(ctx)
			return err == nil && s.Backlog == 0
		})
		s, _ := l.d.fleet.out.Stats(ctx)
		n, err := store.EventCount(ctx, l.id)
		if err != nil || s.Dropped != 0 || n != int64(s.LastSeq) {
			t.Fatalf("lane %s wrote %d events (%d dropped); head office stored %d (%v)", l.id, s.LastSeq, s.Dropped, n, err)
		}
		events += n
		orders, _ := l.d.jr.Orders(ctx, journal.Filter{States: []journal.State{journal.StateLatePaid}})
		late += int64(len(orders))
		rf, _ := l.d.jr.Refunds(ctx, "")
		refunds += int64(len(rf))
	}
	if late == 0 || refunds == 0 {
		t.Fatalf("the scenario made %d late payments and %d refunds: it must exercise both", late, refunds)
	}
	// The simulator's ledger agrees with the lanes (no payment lost or doubled).
	paidAtGateway := 0
	for _, o := range sim.Orders() {
		if o.Status == 2 || o.Status == 3 {
			paidAtGateway++
		}
	}
	var paidInJournals int
	for _, l := range lanes {
		orders, _ := l.d.jr.Orders(ctx, journal.Filter{States: []journal.State{journal.StatePaid, journal.StateLatePaid}})
		paidInJournals += len(orders)
	}
	if paidAtGateway != paidInJournals {
		t.Fatalf("gateway has %d paid orders, the journals %d", paidAtGateway, paidInJournals)
	}

	// Heartbeats reached head office from every lane.
	waitFor(t, 30*time.Second, "every lane's heartbeat", func() bool {
		ls, err := store.Lanes(ctx, time.Now(), 30*time.Second)
		if err != nil || len(ls) != nLanes {
			return false
		}
		for _, l := range ls {
			if l.Silent || l.Version != "test" || l.State == "" {
				return false
			}
		}
		return true
	})

	// Stop the lanes, then compare the reports.
	stopAll()
	laneWG.Wait()
	day := func(d int) string { return time.Now().AddDate(0, 0, d).Format("2006-01-02") }
	type key struct{ day, channel, outcome, currency string }
	type sums struct{ count, amount, refunded int64 }
	laneSum := map[key]sums{}
	var lanePaid, lanePaidAmount, laneRefunded int64
	for _, l := range lanes {
		path := writeLaneConfig(t, l)
		c, out, errb := cli(nil)
		if code := c.Run(ctx, []string{"report", "--config", path, "--format", "json", "--from", day(-1), "--to", day(1)}); code != 0 {
			t.Fatalf("lane %s report: %d %s", l.id, code, errb.String())
		}
		var doc struct {
			Totals []struct {
				Day, Channel, Outcome, Currency string
				Count                           int64
				Amount, Refunded                int64
			}
			PaidCount, PaidAmount, Refunded int64
		}
		if err := json.Unmarshal(out.Bytes(), &doc); err != nil {
			t.Fatal(err)
		}
		for _, x := range doc.Totals {
			k := key{x.Day, x.Channel, x.Outcome, x.Currency}
			s := laneSum[k]
			laneSum[k] = sums{s.count + x.Count, s.amount + x.Amount, s.refunded + x.Refunded}
		}
		lanePaid, lanePaidAmount, laneRefunded = lanePaid+doc.PaidCount, lanePaidAmount+doc.PaidAmount, laneRefunded+doc.Refunded
	}
	out, err := exec.Command(hqBinary, "report", "--config", hqConfig, "--format", "json", "--from", day(-1), "--to", day(1)).Output()
	if err != nil {
		t.Fatalf("hq report: %v", err)
	}
	var fleetDoc struct {
		Totals                          []hq.Total
		Lanes                           int64
		PaidCount, PaidAmount, Refunded int64
	}
	if err := json.Unmarshal(out, &fleetDoc); err != nil {
		t.Fatal(err)
	}
	hqSum := map[key]sums{}
	for _, x := range fleetDoc.Totals {
		k := key{x.Day, x.Channel, x.Outcome, x.Currency}
		s := hqSum[k]
		hqSum[k] = sums{s.count + x.Count, s.amount + x.Amount, s.refunded + x.Refunded}
	}
	if fmt.Sprint(hqSum) != fmt.Sprint(laneSum) || fleetDoc.PaidCount != lanePaid || fleetDoc.PaidAmount != lanePaidAmount ||
		fleetDoc.Refunded != laneRefunded || fleetDoc.Lanes != int64(nLanes) {
		t.Fatalf("fleet report\n%v (paid %d, %d, refunded %d, %d lanes)\nsum of lane reports\n%v (paid %d, %d, refunded %d)",
			hqSum, fleetDoc.PaidCount, fleetDoc.PaidAmount, fleetDoc.Refunded, fleetDoc.Lanes, laneSum, lanePaid, lanePaidAmount, laneRefunded)
	}
	if strings.Contains(office.logs.String(), "event rejected") {
		t.Fatalf("head office rejected lane events:\n%s", tail(office.logs.String(), 20))
	}
	if err := office.stop(); err != nil {
		t.Fatalf("hq stop: %v", err)
	}
	t.Logf("%6.1fs  done: %d sales, %d events, %d late payments, %d refunds; fleet report = sum of %d lane reports (paid %d, %s)",
		time.Since(began).Seconds(), total, events, late, refunds, nLanes, lanePaid, moneyString(lanePaidAmount))
}

func moneyString(cents int64) string { return fmt.Sprintf("%d.%02d", cents/100, cents%100) }

// sell runs a lane's cashier: n sales with the register's references, and
// a partial refund after some paid ones.
func (l *fleetLaneT) sell(ctx context.Context, lane, n int, r *rand.Rand, sold, gate *atomic.Int64) error {
	t := l.d.term
	select {
	case <-t.Ready():
	case <-ctx.Done():
		return ctx.Err()
	}
	for s := 0; s < n; s++ {
		for sold.Load() >= gate.Load() {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(time.Millisecond):
			}
		}
		ref := fmt.Sprintf("%s-%d", l.id, s)
		amount := fleetAmount(r)
		for {
			err := t.RequestSale(ctx, payment.SaleRequest{Amount: amount, Source: payment.SourceECR, ECRRef: ref})
			if err == nil {
				break
			}
			if !errors.Is(err, payment.ErrBusy) {
				return err
			}
			time.Sleep(time.Millisecond)
		}
		if err := t.Scan(ctx, payment.Code{Text: fmt.Sprintf("13%04d%012d", lane, s), Source: "test", At: time.Now()}); err != nil {
			return err
		}
		var res payment.SaleResult
		for res.Request.ECRRef != ref {
			select {
			case res = <-l.results:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		if res.Outcome == payment.OutcomeApproved && r.IntN(100) < 10 {
			// A result may be announced before its commit (main's fast
			// path): refund once the journal has the sale paid.
			if err := waitPaid(ctx, l.d.jr, res.MchOrderNo); err != nil {
				return err
			}
			if rr := t.RefundForECR(ctx, payment.ECRRefund{Ref: ref, Amount: amount / 2, Currency: "CAD"}); rr.Outcome != payment.OutcomeApproved {
				return fmt.Errorf("refund of %s: %v %s", ref, rr.Outcome, rr.Message)
			}
		}
		l.done.Add(1)
		sold.Add(1)
	}
	return nil
}

// compareLane returns how head office differs from a lane's journal, or "".
func compareLane(ctx context.Context, s *hq.Store, jr *journal.Journal, lane string) string {
	orders, err := jr.Orders(ctx, journal.Filter{})
	if err != nil {
		return err.Error()
	}
	got, err := s.Orders(ctx, lane)
	if err != nil {
		return err.Error()
	}
	if len(got) != len(orders) {
		return fmt.Sprintf("%d orders at head office, %d in the journal", len(got), len(orders))
	}
	byNo := map[string]hq.Order{}
	for _, o := range got {
		byNo[o.MchOrderNo] = o
	}
	for _, o := range orders {
		h, ok := byNo[o.MchOrderNo]
		if !ok {
			return "missing order " + o.MchOrderNo
		}
		if h.State != o.State.String() || h.Amount != o.Amount || h.Refunded != o.Refunded || h.PayOrderID != o.PayOrderID ||
			h.Currency != o.Currency || h.Channel != o.Channel || h.CodeMasked != o.CodeMasked {
			return fmt.Sprintf("order %s: head office %+v, journal %s %d refunded %d", o.MchOrderNo, h, o.State, o.Amount, o.Refunded)
		}
	}
	refunds, err := jr.Refunds(ctx, "")
	if err != nil {
		return err.Error()
	}
	hr, err := s.Refunds(ctx, lane)
	if err != nil {
		return err.Error()
	}
	if len(hr) != len(refunds) {
		return fmt.Sprintf("%d refunds at head office, %d in the journal", len(hr), len(refunds))
	}
	byRef := map[string]hq.Refund{}
	for _, r := range hr {
		byRef[r.MchRefundNo] = r
	}
	for _, r := range refunds {
		h, ok := byRef[r.MchRefundNo]
		if !ok || h.State != string(r.State) || h.Amount != r.Amount || h.MchOrderNo != r.MchOrderNo {
			return fmt.Sprintf("refund %s: head office %+v, journal %+v", r.MchRefundNo, h, r)
		}
	}
	return ""
}

// writeLaneConfig writes a config the lane's operator commands accept.
func writeLaneConfig(t *testing.T, l *fleetLaneT) string {
	t.Helper()
	key := filepath.Join(l.dir, "key")
	if err := os.WriteFile(key, []byte("TESTKEY1234567890\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(l.dir, "scanpay.toml")
	body := fmt.Sprintf("[terminal]\nid = %q\n[gateway]\nmch_id = \"10000576\"\njob_no = \"cashier\"\nkey_file = %q\n"+
		"[scanner]\ndriver = \"serial\"\ndevice = \"/dev/null\"\n[journal]\npath = %q\n", l.id, key, filepath.Join(l.dir, "journal.db"))
	if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting: %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
