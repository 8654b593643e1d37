package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/scanpay/scanpay/config"
	"github.com/scanpay/scanpay/display"
	"github.com/scanpay/scanpay/payment"
	"github.com/scanpay/scanpay/payment/iotpaysim"
	"github.com/scanpay/scanpay/payment/journal"
)

// syncWriter serialises the narration and the console display.
type syncWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (s *syncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(p)
}

var _ payment.ResultSink = resultChan(nil)

// resultChan hands the demo every sale result.
type resultChan chan payment.SaleResult

func (r resultChan) Result(s payment.SaleResult) error {
	r <- s
	return nil
}

func (c *CLI) demo(ctx context.Context, args []string) int {
	fs, _ := c.flags("demo", "", "Runs a checkout lane against the built-in IOTPay simulator, with a scripted\ncashier and scanner and the console display, and explains each step.\nNeeds no hardware, config or credentials.")
	pace := fs.Float64("pace", 1, "speed of the narration (2 = twice as fast)")
	verbose := fs.Bool("verbose", false, "show the daemon's log on stderr")
	if code := parse(fs, args); code >= 0 {
		return code
	}
	if *pace <= 0 {
		c.errorf("--pace must be positive")
		return exitUsage
	}
	out := &syncWriter{w: c.Stdout}
	say := func(format string, a ...any) { fmt.Fprintf(out, format+"\n", a...) }
	pause := func(d time.Duration) {
		select {
		case <-time.After(time.Duration(float64(d) / *pace)):
		case <-ctx.Done():
		}
	}

	// The gateway simulator, on loopback, with a throwaway merchant key.
	keyBytes := make([]byte, 16)
	rand.Read(keyBytes)
	key := hex.EncodeToString(keyBytes)
	sim := iotpaysim.New(iotpaysim.Options{MchID: "10000576", Key: key})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		c.errorf("demo: %v", err)
		return exitFailure
	}
	srv := &http.Server{Handler: sim, ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(ln)
	defer srv.Close()
	dir, err := os.MkdirTemp("", "scanpay-demo-")
	if err != nil {
		c.errorf("demo: %v", err)
		return exitFailure
	}
	defer os.RemoveAll(dir)

	cfg := config.Default()
	cfg.Terminal.ID = "DEMO"
	cfg.Terminal.ResultTime = config.Duration{Duration: 1500 * time.Millisecond}
	// The demo's gateway is a simulator on this machine: no clock to wait
	// for (development machines often report theirs unsynchronised).
	cfg.Terminal.RequireClockSync = false
	cfg.Gateway.URL = "http://" + ln.Addr().String()
	cfg.Gateway.MchID, cfg.Gateway.JobNo = "10000576", "demo-cashier"
	cfg.Gateway.PollInterval = config.Duration{Duration: 400 * time.Millisecond}
	cfg.Gateway.PollAttempts = 10
	cfg.Gateway.Timeout = config.Duration{Duration: 5 * time.Second}
	cfg.Display.Driver = config.DisplayConsole
	cfg.Journal.Path = filepath.Join(dir, "journal.db")
	var logw io.Writer = io.Discard
	if *verbose {
		logw = c.Stderr
	}
	log := newLogger(config.Log{Level: "info", Format: "console"}, logw)
	defer log.Sync() // pending flood summaries, and their timers
	results := make(resultChan, 8)
	console := &display.Console{Layout: display.Layout{Width: 20}, Out: out, Prefix: "        "}
	d, err := build(cfg, key, log, overrides{screen: console, noScanner: true, results: []payment.ResultSink{results}})
	if err != nil {
		c.errorf("demo: %v", err)
		return exitFailure
	}
	runCtx, stop := context.WithCancel(ctx)
	runErr := make(chan error, 1)
	go func() { runErr <- d.run(runCtx) }()
	defer func() {
		stop()
		<-runErr
	}()
	select {
	case <-d.term.Ready():
	case <-ctx.Done():
		return exitFailure
	}
	jr := d.jr

	say("scanpay demo: one checkout lane against the built-in IOTPay simulator.")
	say("The customer display is drawn below each step. No hardware, config or credentials are used.")
	say("")

	wechat := "134567890123456789"
	type step struct {
		title, setup string
		amount       int64
		code, wallet string
		explain      func(r payment.SaleResult, o journal.Order) string
	}
	steps := []step{
		{"1. An approved sale", "The cashier types 28.65 on the keypad; the customer shows a WeChat Pay code.", 2865, wechat, "WeChat Pay",
			func(r payment.SaleResult, o journal.Order) string {
				return fmt.Sprintf("Approved: IOTPay answered status 2 (paid) for order %s (IOTPay %s). The order was on disk before it was sent, and is now journaled %s.", o.MchOrderNo, o.PayOrderID, o.State)
			}},
		{"2. A declined sale", "10.51 with an Alipay code whose account is short of money.", 1051, "2812345678901234", "Alipay",
			func(r payment.SaleResult, o journal.Order) string {
				return fmt.Sprintf("Declined (%s): scanpay confirmed it with one query, showed it, and journaled %s. Nothing was charged.", o.Message, o.State)
			}},
		{"3. A customer typing a password", "10.52 with a WeChat code; the customer must confirm on the phone.", 1052, "104567890123456789", "WeChat Pay",
			func(r payment.SaleResult, o journal.Order) string {
				return fmt.Sprintf("IOTPay first said status 1 (paying), so the display asked the customer to confirm, and scanpay queried every %s until status 2: approved, journaled %s.", cfg.Gateway.PollInterval.Duration, o.State)
			}},
		{"4. A lost gateway reply", "10.55 with a UnionPay code. The gateway takes the order and charges it, but its reply is lost on the way.", 1055, "6212345678901234567", "UnionPay",
			func(r payment.SaleResult, o journal.Order) string {
				return fmt.Sprintf("A lost reply means \"unknown\", never \"failed\": scanpay did not send the order again, it asked IOTPay about it and found it paid. One order, charged once: %s.", o.State)
			}},
	}
	ok := true
	for _, s := range steps {
		say("%s", s.title)
		say("   %s", s.setup)
		d.term.Typing(ctx, s.amount)
		pause(700 * time.Millisecond)
		if err := d.term.RequestSale(ctx, payment.SaleRequest{Amount: s.amount, Source: payment.SourceKeypad}); err != nil {
			say("   The lane refused the amount: %v", err)
			ok = false
			continue
		}
		pause(900 * time.Millisecond)
		say("   The scanner reads the %s code %s.", s.wallet, maskForDemo(s.code))
		d.term.Scan(ctx, payment.Code{Text: s.code, Source: "demo scanner", At: time.Now()})
		var r payment.SaleResult
		select {
		case r = <-results:
		case <-ctx.Done():
			return exitFailure
		}
		if err := d.term.Settled(ctx); err != nil {
			return exitFailure
		}
		o, err := jr.Get(ctx, r.MchOrderNo)
		if err != nil {
			say("   journal: %v", err)
			ok = false
			continue
		}
		pause(300 * time.Millisecond)
		say("   → %s", s.explain(r, o))
		say("")
		pause(1500 * time.Millisecond)
	}

	say("5. The same code scanned twice")
	say("   The next customer (5.00) holds up the WeChat code of sale 1 again.")
	if err := d.term.RequestSale(ctx, payment.SaleRequest{Amount: 500, Source: payment.SourceKeypad}); err != nil {
		say("   The lane refused the amount: %v", err)
		ok = false
	}
	pause(900 * time.Millisecond)
	before := len(sim.Orders())
	d.term.Scan(ctx, payment.Code{Text: wechat, Source: "demo scanner", At: time.Now()})
	pause(1200 * time.Millisecond)
	d.term.Cancel(ctx)
	select {
	case <-results:
	case <-time.After(5 * time.Second):
	}
	if len(sim.Orders()) != before {
		say("   !! the repeated code reached the gateway")
		ok = false
	}
	say("   → Code already used: payment codes are single-use, so scanpay refused it at the lane")
	say("     without contacting IOTPay (it keeps a keyed hash of each code, never the code).")
	say("     The cashier cancelled the amount.")
	say("")
	pause(1200 * time.Millisecond)

	say("The journal now holds (scanpay orders):")
	all, _ := jr.Orders(ctx, journal.Filter{})
	var b strings.Builder
	printOrders(&b, all)
	for _, line := range strings.Split(strings.TrimRight(b.String(), "\n"), "\n") {
		say("   %s", line)
	}
	paid, declined, cancelled, amount := 0, 0, 0, int64(0)
	for _, o := range all {
		switch o.State {
		case journal.StatePaid:
			paid++
			amount += o.Amount
		case journal.StateDeclined:
			declined++
		case journal.StateCancelled:
			cancelled++
		}
	}
	say("")
	say("   (An order is written when its amount is armed, so a scan sends it at once; an amount")
	say("   cancelled before any code stays in the journal as CANCELLED and never reaches IOTPay.)")
	say("Report: %d paid sale(s) for %s, %d declined, %d cancelled before any code; IOTPay's ledger holds %d order(s), %d of them paid.",
		paid, display.Money(amount), declined, cancelled, len(sim.Orders()), len(sim.PaidOrders()))
	if len(sim.PaidOrders()) != paid {
		ok = false
	}
	say("")
	say("That was scanpay. Install it on a Pi with the .deb (see README.md); run the tests with: make test")
	log.Debug("demo finished", zap.Bool("ok", ok))
	if !ok {
		return exitFailure
	}
	return exitOK
}

func maskForDemo(code string) string {
	return code[:2] + strings.Repeat("*", len(code)-6) + code[len(code)-4:]
}
