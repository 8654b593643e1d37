package main

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
	"go.uber.org/zap/zaptest"

	"github.com/scanpay/scanpay/config"
	"github.com/scanpay/scanpay/device/input"
	"github.com/scanpay/scanpay/display"
	"github.com/scanpay/scanpay/keypad"
	"github.com/scanpay/scanpay/payment"
	"github.com/scanpay/scanpay/payment/iotpay"
	"github.com/scanpay/scanpay/payment/iotpaysim"
	"github.com/scanpay/scanpay/payment/journal"
)

func TestMain(m *testing.M) {
	if os.Getenv("SCANPAY_BENCH_FLOOR") != "" {
		floorMain() // the benchmark's floor program (benche2e_test.go)
		return
	}
	sandboxLaunch() // a launcher process for the sandbox test never returns
	if err := buildBinary(); err != nil {
		panic(err)
	}
	// VerifyTestMain exits the process, so the built binaries go in its cleanup.
	goleak.VerifyTestMain(m, goleak.IgnoreTopFunction("github.com/coreos/go-systemd/v22/daemon.SdNotify"),
		goleak.Cleanup(func(int) { os.RemoveAll(filepath.Dir(binary)) }))
}

func cli(env map[string]string) (*CLI, *bytes.Buffer, *bytes.Buffer) {
	var out, errb bytes.Buffer
	return &CLI{Stdout: &out, Stderr: &errb, Stdin: strings.NewReader(""), Version: "test",
		Getenv: func(k string) string { return env[k] }}, &out, &errb
}

func TestUsageAndVersion(t *testing.T) {
	c, out, errb := cli(nil)
	if code := c.Run(context.Background(), nil); code != exitUsage || !strings.Contains(errb.String(), "Commands:") {
		t.Fatalf("no args: %d %s", code, errb.String())
	}
	if code := c.Run(context.Background(), []string{"frobnicate"}); code != exitUsage {
		t.Fatalf("unknown command: %d", code)
	}
	if code := c.Run(context.Background(), []string{"version"}); code != 0 || !strings.HasPrefix(out.String(), "scanpay test") {
		t.Fatalf("version: %d %q", code, out.String())
	}
	for _, cmd := range []string{"run", "check-config", "report", "orders", "query", "refund", "demo"} {
		c, _, errb := cli(nil)
		if code := c.Run(context.Background(), []string{cmd, "--help"}); code != 0 || !strings.Contains(errb.String(), "Usage: scanpay "+cmd) {
			t.Errorf("%s --help: %d %s", cmd, code, errb.String())
		}
	}
}

// writeConfig writes a config and a key file and returns the config path.
func writeConfig(t *testing.T, dir, body string, keyMode os.FileMode) string {
	t.Helper()
	key := filepath.Join(dir, "merchant.key")
	if err := os.WriteFile(key, []byte("TESTKEY1234567890\n"), keyMode); err != nil {
		t.Fatal(err)
	}
	os.Chmod(key, keyMode)
	path := filepath.Join(dir, "scanpay.toml")
	body = strings.ReplaceAll(body, "KEYFILE", key)
	body = strings.ReplaceAll(body, "DIR", dir)
	if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

const basicConfig = `
[gateway]
url = "http://127.0.0.1:1"
mch_id = "10000576"
job_no = "cashier"
key_file = "KEYFILE"
[scanner]
driver = "serial"
device = "DIR/scanner"
[journal]
path = "DIR/journal.db"
`

func TestCheckConfig(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "scanner"), nil, 0o600)
	path := writeConfig(t, dir, basicConfig, 0o600)
	c, out, errb := cli(nil)
	if code := c.Run(context.Background(), []string{"check-config", "--config", path}); code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	if strings.Contains(out.String(), "TESTKEY") || !strings.Contains(out.String(), "not shown") || !strings.Contains(out.String(), "poll_attempts = 30") {
		t.Fatalf("output:\n%s", out.String())
	}
	// A key readable by others: refused, key not printed.
	path = writeConfig(t, dir, basicConfig, 0o644)
	c, out, errb = cli(nil)
	if code := c.Run(context.Background(), []string{"check-config", "--config", path}); code != exitUsage || !strings.Contains(errb.String(), "chmod 600") {
		t.Fatalf("group-readable key: %d %s", code, errb.String())
	}
	if strings.Contains(out.String()+errb.String(), "TESTKEY") {
		t.Fatal("key printed")
	}
	// A missing device: reported.
	os.Remove(filepath.Join(dir, "scanner"))
	path = writeConfig(t, dir, basicConfig, 0o600)
	c, _, errb = cli(nil)
	if code := c.Run(context.Background(), []string{"check-config", "--config", path}); code != exitUsage || !strings.Contains(errb.String(), "scanner.device") {
		t.Fatalf("missing device: %d %s", code, errb.String())
	}
	// An unknown key: named with its line; run refuses to start with exit 2.
	path = writeConfig(t, dir, basicConfig+"\n[log]\nlevle = \"debug\"\n", 0o600)
	c, _, errb = cli(nil)
	if code := c.Run(context.Background(), []string{"run", "--config", path}); code != exitUsage || !strings.Contains(errb.String(), "log.levle (line") {
		t.Fatalf("unknown key: %d %s", code, errb.String())
	}
	c, _, errb = cli(nil)
	if code := c.Run(context.Background(), []string{"run", "--config", filepath.Join(dir, "none.toml")}); code != exitUsage {
		t.Fatalf("missing config: %d %s", code, errb.String())
	}
}

func TestDemo(t *testing.T) {
	c, out, errb := cli(nil)
	if code := c.Run(context.Background(), []string{"demo", "--pace", "20"}); code != 0 {
		t.Fatalf("demo exit %d\n%s\n%s", code, out.String(), errb.String())
	}
	s := out.String()
	for _, want := range []string{
		"Approved: IOTPay answered status 2",
		"Declined (insufficient balance)",
		"|Confirm on phone    |",
		"found it paid. One order, charged once: PAID",
		"|Code already used   |",
		"Report: 3 paid sale(s) for $49.72, 1 declined, 1 cancelled before any code; IOTPay's ledger holds 4 order(s), 3 of them paid.",
	} {
		if !strings.Contains(s, want) {
			t.Errorf("demo output lacks %q", want)
		}
	}
	for _, code := range []string{"134567890123456789", "2812345678901234", "6212345678901234567"} {
		if strings.Contains(s, code) {
			t.Errorf("demo printed the full code %s", code)
		}
	}
}

// TestKeypadAmountSale drives the daemon's wiring with keypad keys (the
// evdev part is proven in the VM test).
func TestKeypadAmountSale(t *testing.T) {
	dir := t.TempDir()
	clock := iotpaysim.NewFakeClock(time.Now())
	srvURL, stopSim, _ := startSim(t, clock)
	defer stopSim()
	cfg := config.Default()
	cfg.Gateway.URL, cfg.Gateway.MchID, cfg.Gateway.JobNo = srvURL, "10000576", "c"
	cfg.Gateway.PollInterval = config.Duration{Duration: 100 * time.Millisecond}
	cfg.Journal.Path = filepath.Join(dir, "j.db")
	var screens bytes.Buffer
	console := &display.Console{Layout: display.Layout{Width: 20}, Out: &syncWriter{w: &screens}}
	results := make(resultChan, 4)
	d, err := build(cfg, "TESTKEY1234567890", zaptest.NewLogger(t), overrides{screen: console, noScanner: true, results: []payment.ResultSink{results},
		clockSynced: func() (bool, error) { return true, nil }})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- d.run(ctx) }()
	<-d.term.Ready()
	ed := keypad.NewEditor(keypad.Config{MaxAmount: cfg.Terminal.MaxAmount})
	for _, k := range []uint16{input.KeyKP2, input.KeyKP8, input.KeyKP6, input.KeyKP5} {
		keypad.Feed(ctx, ed, k, keypadSink{d.term}, zaptest.NewLogger(t))
	}
	// The display shows the newest screen (it may skip ones in between):
	// the whole amount is echoed before Enter.
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(syncString(&screens, console), "|Amount        $28.65|") {
		if time.Now().After(deadline) {
			t.Fatal("typed amount not echoed")
		}
		time.Sleep(5 * time.Millisecond)
	}
	keypad.Feed(ctx, ed, input.KeyKPEnter, keypadSink{d.term}, zaptest.NewLogger(t))
	deadline = time.Now().Add(5 * time.Second)
	for d.term.State() != payment.StateAwaitingCode && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	d.term.Scan(ctx, payment.Code{Text: "134567890123456789"})
	r := <-results
	if r.Outcome != payment.OutcomeApproved || r.Request.Amount != 2865 || r.Request.Source != payment.SourceKeypad {
		t.Fatalf("%+v", r)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// syncString reads what the console drew, under the writer's lock.
func syncString(b *bytes.Buffer, c *display.Console) string {
	w := c.Out.(*syncWriter)
	w.mu.Lock()
	defer w.mu.Unlock()
	return b.String()
}

// TestRefundSendsDevice: the operator commands build the gateway client
// from the same config as the daemon, so a refund from the command line
// names the lane's device as the daemon's requests do.
func TestRefundSendsDevice(t *testing.T) {
	dir := t.TempDir()
	sim := iotpaysim.New(iotpaysim.Options{MchID: "10000576", Key: "TESTKEY1234567890"})
	var mu sync.Mutex
	device := map[string]string{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ParseForm() == nil {
			if f, err := iotpay.DecodeFields([]byte(r.PostForm.Get("params"))); err == nil {
				mu.Lock()
				device[strings.TrimPrefix(r.URL.Path, "/v1/")] = f["device"]
				mu.Unlock()
			}
		}
		sim.ServeHTTP(w, r)
	}))
	defer srv.Close()
	path := writeConfig(t, dir, strings.Replace(basicConfig, "http://127.0.0.1:1", srv.URL, 1), 0o600)

	// A paid order to refund, as the daemon would have journaled it.
	ctx := context.Background()
	jr, err := journal.Open(filepath.Join(dir, "journal.db"), journal.Options{})
	if err != nil {
		t.Fatal(err)
	}
	o, err := jr.AddOrder(ctx, journal.NewOrder{TerminalID: "LANE1", Amount: 500, Currency: "CAD", Channel: iotpay.ChannelWeChat,
		CodeMasked: "13************6789", CodeHash: "h1", Source: "keypad"}, func(n uint64) string { return payment.OrderNumber("LANE1", n) })
	if err == nil {
		_, err = jr.Transition(ctx, o.MchOrderNo, journal.StateSubmitting, journal.StatePaid, journal.Update{PayOrderID: "P0001", Status: 2})
	}
	jr.Close()
	if err != nil {
		t.Fatal(err)
	}

	c, out, errb := cli(nil)
	c.Run(ctx, []string{"refund", "--config", path, o.MchOrderNo}) // the simulator does not know P0001: the outcome does not matter
	mu.Lock()
	defer mu.Unlock()
	if got, ok := device["refund_order"]; !ok || got != "scanpay" {
		t.Fatalf("refund_order sent device %q (sent: %v)\n%s%s", got, ok, out.String(), errb.String())
	}
}

// Installed as scanpay-hq, the program runs head office's commands without
// the "hq" word; as scanpay, nothing is rewritten.
func TestCommandArgsAsHQ(t *testing.T) {
	cases := []struct {
		name string
		in   []string
		want string
	}{
		{"scanpay", []string{"run", "--config", "x"}, "run --config x"},
		{"scanpay-hq", []string{"run", "--config", "x"}, "hq run --config x"},
		{"scanpay-hq", []string{"--config", "x"}, "hq --config x"},
		{"scanpay-hq", nil, "hq"},
		{"scanpay-hq", []string{"report", "--format", "csv"}, "hq report --format csv"},
		{"scanpay-hq", []string{"hq", "lanes"}, "hq lanes"},
		{"scanpay-hq", []string{"demo-fleet"}, "demo-fleet"},
		{"scanpay-hq", []string{"version"}, "version"},
	}
	for _, c := range cases {
		if got := strings.Join(commandArgs(c.name, c.in), " "); got != c.want {
			t.Errorf("%s %q: %q, want %q", c.name, c.in, got, c.want)
		}
	}
}

// A late payment a restart interrupted is never refunded by the lane: the
// order list tells the operator what to do, until it is refunded.
func TestOrderListNamesInterruptedLatePayment(t *testing.T) {
	held := journal.Order{MchOrderNo: "L01-00000007-ABCDE", State: journal.StateLatePaid, Amount: 4028, Interrupted: true}
	plain := journal.Order{MchOrderNo: "L01-00000008-ABCDE", State: journal.StateLatePaid, Amount: 500}
	refunded := held
	refunded.MchOrderNo, refunded.Refunded = "L01-00000009-ABCDE", 4028
	var out bytes.Buffer
	printOrders(&out, []journal.Order{held, plain, refunded})
	lines := strings.Split(out.String(), "\n")
	if len(lines) < 4 || !strings.Contains(lines[1], "interrupted by a restart: check the receipt") {
		t.Fatalf("an interrupted late payment is not flagged:\n%s", out.String())
	}
	for _, l := range lines[2:4] {
		if strings.Contains(l, "interrupted") {
			t.Fatalf("flagged an order with nothing for the operator to do: %q", l)
		}
	}
	if !toJSON(held).Interrupted || toJSON(plain).Interrupted {
		t.Fatal("the JSON list does not carry the interrupted mark")
	}
}
