package main

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"github.com/scanpay/scanpay/config"
	"github.com/scanpay/scanpay/display"
	"github.com/scanpay/scanpay/payment"
	"github.com/scanpay/scanpay/payment/iotpay"
	"github.com/scanpay/scanpay/payment/iotpaysim"
	"github.com/scanpay/scanpay/payment/journal"
)

// Flags after the positional argument are read too.
func TestFlagsAfterArguments(t *testing.T) {
	for _, args := range [][]string{
		{"ORDER1", "--config", "/x.toml"},
		{"--config", "/x.toml", "ORDER1"},
		{"--config=/x.toml", "ORDER1"},
	} {
		c, _, _ := cli(nil)
		fs, path := c.flags("query", " ORDER", "")
		if code := parse(fs, args); code >= 0 {
			t.Fatalf("%v: exit %d", args, code)
		}
		if *path != "/x.toml" || fs.NArg() != 1 || fs.Arg(0) != "ORDER1" {
			t.Fatalf("%v: config %q, args %v", args, *path, fs.Args())
		}
	}
	c, _, _ := cli(nil)
	fs, _ := c.flags("query", " ORDER", "")
	if code := parse(fs, []string{"ORDER1", "--nope"}); code != exitUsage {
		t.Fatalf("unknown flag after an argument: %d", code)
	}
}

// `scanpay query` refreshes a settled order: a paid order recorded without
// IOTPay's id gets it, so it can be refunded; an answer that does not
// match the order records nothing.
func TestQueryRefreshesSettledOrder(t *testing.T) {
	dir := t.TempDir()
	url, stop, sim := startSim(t, iotpaysim.NewFakeClock(time.Now()))
	defer stop()
	os.WriteFile(filepath.Join(dir, "scanner"), nil, 0o600)
	path := writeConfig(t, dir, strings.Replace(basicConfig, `url = "http://127.0.0.1:1"`, `url = "`+url+`"`, 1), 0o600)
	ctx := context.Background()
	// A paid order whose replies never carried payOrderId.
	client, err := iotpay.New(iotpay.Config{BaseURL: url, MchID: "10000576", Key: "TESTKEY1234567890", JobNo: "c", NotifyURL: "n", Subject: "s", Body: "b", ClientIP: "127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	client.CreateOrder(ctx, iotpay.CreateRequest{MchOrderNo: "LANE1-00000001-AAAAA", ChannelID: "WX_MICROPAY", Currency: "CAD", Amount: 1500, IdentityCode: "134567890123450001"})
	j, err := journal.Open(filepath.Join(dir, "journal.db"), journal.Options{})
	if err != nil {
		t.Fatal(err)
	}
	o, _ := j.AddOrder(ctx, journal.NewOrder{TerminalID: "LANE1", Amount: 1500, Currency: "CAD", Channel: "WX_MICROPAY", CodeMasked: "13**", CodeHash: "h", Source: "keypad"},
		func(uint64) string { return "LANE1-00000001-AAAAA" })
	j.Transition(ctx, o.MchOrderNo, journal.StateSubmitting, journal.StatePaid, journal.Update{Status: 2})
	j.Close()

	// A lying reply first: nothing recorded, exit 1.
	sim.SetFaults(func(string, map[string]string) iotpaysim.Fault { return iotpaysim.Fault{Lie: iotpaysim.LieAmount} })
	c, out, errb := cli(nil)
	if code := c.Run(ctx, []string{"query", o.MchOrderNo, "--config", path}); code != exitFailure || !strings.Contains(errb.String(), "does not match") {
		t.Fatalf("lying reply: exit %d\n%s%s", code, out, errb)
	}
	sim.SetFaults(nil)
	c, out, errb = cli(nil)
	if code := c.Run(ctx, []string{"query", o.MchOrderNo, "--config", path}); code != exitOK {
		t.Fatalf("exit %d\n%s%s", code, out, errb)
	}
	so, _ := sim.Order(o.MchOrderNo)
	if !strings.Contains(out.String(), "journal updated: IOTPay order "+so.PayOrderID) {
		t.Fatalf("output:\n%s", out)
	}
	c, out, errb = cli(nil)
	if code := c.Run(ctx, []string{"refund", o.MchOrderNo, "--config", path, "--amount", "500"}); code != exitOK {
		t.Fatalf("refund after the repair: exit %d\n%s%s", code, out, errb)
	}
	// --settle only settles UNKNOWN refunds.
	j, _ = journal.Open(filepath.Join(dir, "journal.db"), journal.Options{ReadOnly: true})
	refunds, _ := j.Refunds(ctx, o.MchOrderNo)
	j.Close()
	c, _, errb = cli(nil)
	if code := c.Run(ctx, []string{"refund", "--settle", refunds[0].MchRefundNo, "--failed", "--config", path}); code != exitFailure {
		t.Fatalf("a DONE refund was settled: exit %d %s", code, errb)
	}
}

// The daemon takes no sale until the clock is synchronised; /healthz says
// why, with 503.
func TestDaemonWaitsForClock(t *testing.T) {
	dir := t.TempDir()
	url, stop, _ := startSim(t, iotpaysim.NewFakeClock(time.Now()))
	defer stop()
	cfg := config.Default()
	cfg.Gateway.URL, cfg.Gateway.MchID, cfg.Gateway.JobNo = url, "10000576", "c"
	cfg.Journal.Path = filepath.Join(dir, "j.db")
	listen := freePort(t)
	var synced atomic.Bool
	m := newMetrics("test")
	d, err := build(cfg, "TESTKEY1234567890", zaptest.NewLogger(t), overrides{screen: &display.Console{Layout: display.Layout{Width: 20}, Out: io.Discard},
		noScanner: true, observer: m, clockSynced: func() (bool, error) { return synced.Load(), nil }})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- d.run(ctx, m.server(listen, d, zaptest.NewLogger(t))) }()
	<-d.term.Ready()
	health := func() (int, string) {
		for i := 0; i < 100; i++ {
			resp, err := http.Get("http://" + listen + "/healthz")
			if err != nil {
				time.Sleep(20 * time.Millisecond)
				continue
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			return resp.StatusCode, string(b)
		}
		t.Fatal("no /healthz")
		return 0, ""
	}
	code, body := health()
	var h map[string]any
	json.Unmarshal([]byte(body), &h)
	if code != http.StatusServiceUnavailable || h["state"] != "WAITING_CLOCK" || !strings.Contains(body, "clock") {
		t.Fatalf("healthz while waiting: %d %s", code, body)
	}
	if err := d.term.RequestSale(ctx, payment.SaleRequest{Amount: 100}); err == nil {
		t.Fatal("a sale was taken before the clock was set")
	}
	synced.Store(true)
	deadline := time.Now().Add(5 * time.Second)
	for d.term.State() != payment.StateIdle {
		if time.Now().After(deadline) {
			t.Fatalf("lane %s after the clock was set", d.term.State())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if code, body := health(); code != http.StatusOK {
		t.Fatalf("healthz after the clock was set: %d %s", code, body)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func TestCheckConfigWarnings(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "scanner"), nil, 0o600)
	path := writeConfig(t, dir, basicConfig+"\n[ecr]\nlisten = \"0.0.0.0:8800\"\nallow_from = [\"192.168.1.0/24\"]\n", 0o600)
	c, _, errb := cli(nil)
	if code := c.Run(context.Background(), []string{"check-config", "--config", path}); code != exitOK || !strings.Contains(errb.String(), "warning: ecr.listen") {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
}
