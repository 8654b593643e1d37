//go:build !nohq

package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/scanpay/scanpay/config"
	"github.com/scanpay/scanpay/display"
	"github.com/scanpay/scanpay/fleet/event"
	"github.com/scanpay/scanpay/hq"
	"github.com/scanpay/scanpay/hq/pglocal"
	"github.com/scanpay/scanpay/payment"
	"github.com/scanpay/scanpay/payment/iotpaysim"
	"github.com/scanpay/scanpay/payment/journal"
)

// demoFleet runs three lanes against the simulator, an embedded NATS with
// JetStream, and head office into PostgreSQL (a throwaway cluster when the
// server binaries are installed, or --postgres), then prints the fleet
// report.
func (c *CLI) demoFleet(ctx context.Context, args []string) int {
	fs, _ := c.flags("demo-fleet", "", "Runs three lanes against the built-in gateway simulator, head office's embedded\nNATS JetStream and scanpay hq into PostgreSQL, shows the events arriving and the\nfleet report. PostgreSQL: --postgres URL, or a throwaway cluster when Debian's\npostgresql package is installed; without it only the events are shown.")
	pgURL := fs.String("postgres", "", "an existing database to use (default: a throwaway cluster)")
	if code := parse(fs, args); code >= 0 {
		return code
	}
	out := &syncWriter{w: c.Stdout}
	say := func(format string, a ...any) { fmt.Fprintf(out, format+"\n", a...) }
	dir, err := os.MkdirTemp("", "scanpay-demo-fleet-")
	if err != nil {
		c.errorf("demo-fleet: %v", err)
		return exitFailure
	}
	defer os.RemoveAll(dir)

	// Head office's NATS, embedded.
	emb, err := hq.StartEmbedded(hq.EmbeddedConfig{Listen: "127.0.0.1:-1", StoreDir: filepath.Join(dir, "jetstream")})
	if err != nil {
		c.errorf("demo-fleet: %v", err)
		return exitFailure
	}
	defer emb.Close()
	say("head office: embedded NATS with JetStream at %s", emb.ClientURL())

	// PostgreSQL.
	dsn := *pgURL
	if dsn == "" {
		pg, err := pglocal.Start(pglocal.Options{})
		switch {
		case errors.Is(err, pglocal.ErrNotInstalled):
			say("head office: no PostgreSQL (%v); showing the events only", err)
		case err != nil:
			c.errorf("demo-fleet: %v", err)
			return exitFailure
		default:
			defer pg.Stop()
			if dsn, err = pg.NewDB(ctx); err != nil {
				c.errorf("demo-fleet: %v", err)
				return exitFailure
			}
			say("head office: a throwaway PostgreSQL cluster (%s)", dsn)
		}
	}
	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	var wg sync.WaitGroup
	defer wg.Wait()
	defer stop()
	var store *hq.Store
	if dsn != "" {
		if store, err = hq.OpenStore(ctx, dsn); err != nil {
			c.errorf("demo-fleet: %v", err)
			return exitFailure
		}
		defer store.Close()
		h := hq.New(hq.Config{ManageStream: true, InProcess: emb.Server(), Batch: 64}, store)
		wg.Add(1)
		go func() {
			defer wg.Done()
			h.Run(runCtx)
		}()
	}

	// Watch the events go by.
	nc, err := nats.Connect("", nats.InProcessServer(emb.Server()))
	if err != nil {
		c.errorf("demo-fleet: %v", err)
		return exitFailure
	}
	defer nc.Close()
	sub, err := nc.Subscribe("scanpay.lane.*.events", func(m *nats.Msg) {
		lane, _, _ := event.LaneOf(event.Prefix, m.Subject)
		if e, err := event.Parse(m.Data, lane); err == nil {
			what := e.Order.State
			if e.Refund != nil {
				what = "refund " + e.Refund.State
			}
			say("    event  %-4s #%-3d %-8s %-22s %-16s %s", e.Lane, e.Seq, e.Kind, e.Order.MchOrderNo, what, display.Money(e.Order.Amount))
		}
	})
	if err != nil {
		c.errorf("demo-fleet: %v", err)
		return exitFailure
	}
	defer sub.Unsubscribe()

	// The gateway and three lanes.
	clock := iotpaysim.NewFakeClock(time.Now())
	sim := iotpaysim.New(iotpaysim.Options{MchID: "10000576", Key: "DEMOKEY1234567890", Clock: clock})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		c.errorf("demo-fleet: %v", err)
		return exitFailure
	}
	srv := &http.Server{Handler: sim, ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(ln)
	defer srv.Close()
	type demoLane struct {
		id      string
		d       *daemon
		results resultChan
	}
	var lanes []*demoLane
	for i := 1; i <= 3; i++ {
		cfg := config.Default()
		cfg.Terminal.ID = fmt.Sprintf("SHOP1_L%d", i)
		cfg.Terminal.ResultTime = config.Duration{Duration: 10 * time.Millisecond}
		cfg.Terminal.RequireClockSync = false
		cfg.Gateway.URL, cfg.Gateway.MchID, cfg.Gateway.JobNo = "http://"+ln.Addr().String(), "10000576", "demo"
		cfg.Gateway.PollInterval = config.Duration{Duration: 100 * time.Millisecond}
		cfg.Gateway.PollAttempts = 5
		cfg.Gateway.RefundLate = true
		cfg.Journal.Path = filepath.Join(dir, fmt.Sprintf("lane%d.db", i))
		cfg.Fleet = &config.Fleet{Servers: []string{emb.ClientURL()}, Stream: "SCANPAY", SubjectPrefix: "scanpay", MaxBacklog: 100000,
			Heartbeat: config.Duration{Duration: time.Second}}
		l := &demoLane{id: cfg.Terminal.ID, results: make(resultChan, 8)}
		l.d, err = build(cfg, "DEMOKEY1234567890", newLogger(config.Log{Level: "error", Format: "console"}, io.Discard),
			overrides{noScanner: true, results: []payment.ResultSink{l.results}, version: c.Version})
		if err != nil {
			c.errorf("demo-fleet: %v", err)
			return exitFailure
		}
		lanes = append(lanes, l)
		wg.Add(1)
		go func() {
			defer wg.Done()
			l.d.run(runCtx)
		}()
	}
	say("three lanes selling (amounts ending 51 are declined, 55 lose the gateway's reply, 54 are paid too late):\n")
	amounts := [][]int64{{2865, 1299, 4551, 1055}, {999, 15000, 2054, 735}, {4200, 1851, 620, 3100}}
	var lw sync.WaitGroup
	for i, l := range lanes {
		lw.Add(1)
		go func() {
			defer lw.Done()
			t := l.d.term
			<-t.Ready()
			for n, amount := range amounts[i] {
				ref := fmt.Sprintf("%s-%d", l.id, n)
				for t.RequestSale(runCtx, payment.SaleRequest{Amount: amount, Source: payment.SourceECR, ECRRef: ref}) != nil {
					if runCtx.Err() != nil {
						return
					}
					time.Sleep(20 * time.Millisecond)
				}
				t.Scan(runCtx, payment.Code{Text: fmt.Sprintf("13%04d%012d", i, n), Source: "demo", At: time.Now()})
				var res payment.SaleResult
				for res = range l.results {
					if res.Request.ECRRef == ref {
						break
					}
				}
				if n == 1 && res.Outcome == payment.OutcomeApproved {
					// The result can come before its commit: refund once
					// the journal has the sale paid.
					waitPaid(runCtx, l.d.jr, res.MchOrderNo)
					t.RefundForECR(runCtx, payment.ECRRefund{Ref: ref, Amount: amount / 2, Currency: "CAD"})
				}
				time.Sleep(150 * time.Millisecond)
			}
		}()
	}
	lw.Wait()
	// The late payments turn up: move the gateway's clock past them.
	clock.Advance(2 * time.Minute)
	if store == nil {
		time.Sleep(3 * time.Second)
		say("\n(no PostgreSQL: install Debian's postgresql package, or pass --postgres, to see head office's report)")
		return exitOK
	}
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		open, _ := store.Open(ctx)
		n, _ := store.EventCount(ctx, "")
		var written int64
		for _, l := range lanes {
			st, _ := l.d.fleet.out.Stats(ctx)
			written += int64(st.LastSeq)
		}
		if len(open) == 0 && n == written && n > 0 {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	time.Sleep(1500 * time.Millisecond) // a heartbeat from every lane
	path := filepath.Join(dir, "hq.toml")
	if err := os.WriteFile(path, []byte(fmt.Sprintf("[nats]\nservers = [%q]\n[postgres]\nurl = %q\n", emb.ClientURL(), dsn)), 0o600); err != nil {
		c.errorf("demo-fleet: %v", err)
		return exitFailure
	}
	say("\n$ scanpay-hq report")
	c.Stdout = out
	if code := c.hqReport(ctx, []string{"--config", path}); code != exitOK {
		return code
	}
	say("\n$ scanpay-hq lanes")
	if code := c.hqLanes(ctx, []string{"--config", path}); code != exitOK {
		return code
	}
	say("\n$ scanpay-hq open")
	code := c.hqOpen(ctx, []string{"--config", path})
	say("\n%s", strings.TrimSpace(`
Every order and refund went from the lane's journal (same transaction as the
sale) through JetStream into PostgreSQL. Stop NATS or PostgreSQL and the lanes
go on selling; their events wait in the journal and arrive when it is back.`))
	return code
}

// waitPaid waits until the journal has the order paid.
func waitPaid(ctx context.Context, jr *journal.Journal, no string) error {
	deadline := time.Now().Add(30 * time.Second)
	for {
		o, err := jr.Get(ctx, no)
		if err == nil && (o.State == journal.StatePaid || o.State == journal.StateLatePaid) {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("order %s approved but not paid in the journal: %v %v", no, o.State, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Millisecond):
		}
	}
}
