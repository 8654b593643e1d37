//go:build !nohq

package main

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/scanpay/scanpay/fleet/event"
	"github.com/scanpay/scanpay/hq"
	"github.com/scanpay/scanpay/hq/pgtest"
	"go.uber.org/zap"
)

func TestHQUsage(t *testing.T) {
	c, out, _ := cli(nil)
	if code := c.Run(context.Background(), []string{"hq", "help"}); code != 0 || !strings.Contains(out.String(), "report") {
		t.Fatalf("hq help: %d %s", code, out.String())
	}
	c, _, errb := cli(nil)
	if code := c.Run(context.Background(), []string{"hq", "frobnicate"}); code != exitUsage {
		t.Fatalf("unknown hq command: %d %s", code, errb.String())
	}
	for _, sub := range []string{"run", "report", "open", "lanes"} {
		c, _, errb := cli(nil)
		if code := c.Run(context.Background(), []string{"hq", sub, "--help"}); code != 0 || !strings.Contains(errb.String(), "/etc/scanpay/hq.toml") {
			t.Errorf("hq %s --help: %d %s", sub, code, errb.String())
		}
	}
	// A bad config is a usage error naming the key.
	dir := t.TempDir()
	path := filepath.Join(dir, "hq.toml")
	os.WriteFile(path, []byte("[nats]\nreplicas = 2\n"), 0o600)
	for _, args := range [][]string{{"hq", "--config", path}, {"hq", "report", "--config", path}} {
		c, _, errb := cli(nil)
		if code := c.Run(context.Background(), args); code != exitUsage || !strings.Contains(errb.String(), "nats.replicas") {
			t.Errorf("%v: %d %s", args, code, errb.String())
		}
	}
	c, _, errb = cli(nil)
	if code := c.Run(context.Background(), []string{"hq", "report", "--config", path, "--format", "xml"}); code != exitUsage {
		t.Fatalf("bad format: %d %s", code, errb.String())
	}
}

// The fleet commands read what head office stored.
func TestHQReports(t *testing.T) {
	pg := pgtest.Start(t, pgtest.Options{})
	dsn := pg.NewDB(t)
	ctx := context.Background()
	store, err := hq.OpenStore(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	now := time.Now().UTC().Truncate(time.Millisecond)
	mk := func(lane string, seq uint64, no, state string, amount int64) event.Event {
		return event.Event{V: 1, Lane: lane, Seq: seq, Kind: event.KindOrder, At: now, Order: event.Order{MchOrderNo: no, Amount: amount,
			Currency: "CAD", Channel: "WX_MICROPAY", State: state, Status: -1, CodeMasked: "13****6789", CreatedAt: now, UpdatedAt: now}}
	}
	late := mk("L02", 2, "L02-2", "LATE_PAID", 700)
	if _, err := store.Apply(ctx, []event.Event{mk("L01", 1, "L01-1", "PAID", 2865), mk("L01", 2, "L01-2", "UNCONFIRMED", 100),
		mk("L02", 1, "L02-1", "PAID", 1000), late}); err != nil {
		t.Fatal(err)
	}
	if err := store.Heartbeat(ctx, event.Heartbeat{V: 1, Lane: "L01", At: now, Version: "9.9", State: "IDLE", Devices: map[string]bool{"scanner": false}, Backlog: 4}); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "hq.toml")
	os.WriteFile(path, []byte("[nats]\nservers = [\"nats://127.0.0.1:4222\"]\n[postgres]\nurl = \""+dsn+"\"\n[report]\ntimezone = \"UTC\"\n"), 0o600)

	c, out, errb := cli(nil)
	if code := c.Run(ctx, []string{"hq", "report", "--config", path, "--format", "json"}); code != 0 {
		t.Fatalf("report: %d %s", code, errb.String())
	}
	var doc struct {
		Totals                       []hq.Total
		Lanes, PaidCount, PaidAmount int64
		TimeZone                     string
	}
	if err := json.Unmarshal(out.Bytes(), &doc); err != nil {
		t.Fatal(err)
	}
	if doc.Lanes != 2 || doc.PaidCount != 3 || doc.PaidAmount != 2865+1000+700 || len(doc.Totals) != 4 || doc.TimeZone != "UTC" {
		t.Fatalf("report %+v", doc)
	}
	c, out, _ = cli(nil)
	if code := c.Run(ctx, []string{"hq", "report", "--config", path, "--format", "csv", "--lane", "L02"}); code != 0 ||
		!strings.HasPrefix(out.String(), "day,lane,channel,outcome") || strings.Count(out.String(), "\n") != 3 {
		t.Fatalf("csv: %d %q", code, out.String())
	}
	c, out, _ = cli(nil)
	if code := c.Run(ctx, []string{"hq", "report", "--config", path}); code != 0 || !strings.Contains(out.String(), "2 lane(s). Paid: 3 sale(s), $45.65") {
		t.Fatalf("table: %d %s", code, out.String())
	}
	c, out, _ = cli(nil)
	if code := c.Run(ctx, []string{"hq", "open", "--config", path, "--format", "json"}); code != 0 {
		t.Fatalf("open: %d", code)
	}
	var open []hq.OpenItem
	json.Unmarshal(out.Bytes(), &open)
	if len(open) != 2 || open[0].What == open[1].What {
		t.Fatalf("open %+v", open)
	}
	c, out, _ = cli(nil)
	if code := c.Run(ctx, []string{"hq", "lanes", "--config", path}); code != 0 || !strings.Contains(out.String(), "scanner:DOWN") ||
		!strings.Contains(out.String(), "never SILENT") || !strings.Contains(out.String(), "2 lane(s), 1 silent") {
		t.Fatalf("lanes: %d %s", code, out.String())
	}
}

// check-config reports [fleet] files it cannot use.
func TestCheckConfigFleet(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "scanner"), nil, 0o600)
	creds := filepath.Join(dir, "fleet.creds")
	os.WriteFile(creds, []byte("SUAFAKE\n"), 0o644)
	path := writeConfig(t, dir, basicConfig+"[fleet]\nservers = [\"tls://hq.example.com:4222\"]\ncredentials = \""+creds+"\"\n", 0o600)
	c, _, errb := cli(nil)
	if code := c.Run(context.Background(), []string{"check-config", "--config", path}); code != exitUsage || !strings.Contains(errb.String(), "readable by others") {
		t.Fatalf("check-config: %d %s", code, errb.String())
	}
}

// The hardened metrics server (scanpay-hq run serves head office's
// metrics with it, as the lane does its own) serves head office's
// handler, and takes no connection past its cap until one frees.
func TestHQMetricsServedHardened(t *testing.T) {
	addr := freePort(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- serveMetrics(ctx, addr, hq.NewMetrics("test").Handler(), zap.NewNop()) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("metrics server: %v", err)
		}
	}()
	var body string
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		resp, err := (&http.Client{Transport: &http.Transport{DisableKeepAlives: true}}).Get("http://" + addr + "/metrics")
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			body = string(b)
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if !strings.Contains(body, "scanpay_hq_events_total") {
		t.Fatalf("head office's metrics not served: %.200q", body)
	}
	// More idle connections than the cap: the server accepts only its cap
	// at a time, so one past it is not served until a slot frees.
	var conns []net.Conn
	for i := 0; i < metricsMaxConns; i++ {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
	}
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	time.Sleep(200 * time.Millisecond)
	// A new connection each time (no keep-alive slot to reuse).
	client := &http.Client{Timeout: 500 * time.Millisecond, Transport: &http.Transport{DisableKeepAlives: true}}
	if resp, err := client.Get("http://" + addr + "/metrics"); err == nil {
		resp.Body.Close()
		t.Fatal("a scrape past the connection cap was served: head office's server has no cap")
	}
	conns[0].Close()
	conns = conns[1:]
	client.Timeout = 5 * time.Second
	resp, err := client.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatalf("a scrape once a slot freed: %v", err)
	}
	resp.Body.Close()
}
