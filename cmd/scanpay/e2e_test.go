package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/scanpay/scanpay/device/serial/serialtest"
	"github.com/scanpay/scanpay/ecr"
	"github.com/scanpay/scanpay/ecr/ecrtest"
	"github.com/scanpay/scanpay/payment/iotpaysim"
)

// binary is the lane's scanpay as packaged (-tags nohq); hqBinary is head
// office's build, installed as scanpay-hq. The end-to-end tests run them.
var binary, hqBinary string

func buildBinary() error {
	dir, err := os.MkdirTemp("", "scanpay-e2e-")
	if err != nil {
		return err
	}
	binary, hqBinary = filepath.Join(dir, "scanpay"), filepath.Join(dir, "scanpay-hq")
	for _, b := range []struct{ out, tags string }{{binary, "nohq"}, {hqBinary, ""}} {
		cmd := exec.Command("go", "build", "-tags", b.tags, "-o", b.out, ".")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("go build: %v\n%s", err, out)
		}
	}
	return nil
}

func startSim(t *testing.T, clock iotpaysim.Clock) (string, func(), *iotpaysim.Sim) {
	sim := iotpaysim.New(iotpaysim.Options{MchID: "10000576", Key: "TESTKEY1234567890", Clock: clock})
	srv := httptest.NewServer(sim)
	return srv.URL, srv.Close, sim
}

// safeBuffer collects a device's output; the package's syncWriter guards it.
type safeBuffer struct {
	syncWriter
	b bytes.Buffer
}

func newSafeBuffer() *safeBuffer {
	s := &safeBuffer{}
	s.w = &s.b
	return s
}

func (s *safeBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

type e2eLane struct {
	t       *testing.T
	dir     string
	config  string
	sim     *iotpaysim.Sim
	clock   *iotpaysim.FakeClock
	scanner *serialtest.Port
	ecrDev  *serialtest.Port
	display *serialtest.Port
	screen  *safeBuffer
	reg     *ecrtest.Register
	metrics string
	notify  chan string
	proc    *exec.Cmd
	logs    *safeBuffer
	exited  chan error
	// launcher, when set, runs the binary (its first word is the
	// program, the binary's path comes through env).
	launcher []string
	env      []string
}

func freePort(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func newLane(t *testing.T, pollInterval string) *e2eLane {
	t.Helper()
	l := &e2eLane{t: t, dir: t.TempDir(), clock: iotpaysim.NewFakeClock(time.Now()), screen: newSafeBuffer(), notify: make(chan string, 100)}
	url, stop, sim := startSim(t, l.clock)
	t.Cleanup(stop)
	l.sim = sim
	l.scanner = serialtest.NewPort(t, l.dir, "scanner")
	l.ecrDev = serialtest.NewPort(t, l.dir, "ecr")
	l.display = serialtest.NewPort(t, l.dir, "display")
	go io.Copy(l.screen, l.display.Master())
	l.reg = &ecrtest.Register{Conn: l.ecrDev.Master(), Timeout: 3 * time.Second}
	l.metrics = freePort(t)
	// A fake systemd notify socket.
	sock := filepath.Join(l.dir, "notify.sock")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := conn.Read(buf)
			if err != nil {
				return
			}
			l.notify <- string(buf[:n])
		}
	}()
	l.config = writeConfig(t, l.dir, fmt.Sprintf(`
[terminal]
id = "E2E"
result_time = "1s"
# This machine's clock is kept by the host; its kernel reports it
# unsynchronised (see TestWaitsForClock for the wait itself).
require_clock_sync = false
[gateway]
url = %q
mch_id = "10000576"
job_no = "cashier"
key_file = "KEYFILE"
timeout = "2s"
poll_interval = %q
poll_attempts = 10
[scanner]
driver = "serial"
device = "DIR/scanner"
[ecr]
device = "DIR/ecr"
pos_number = "01"
[display]
driver = "escpos"
device = "DIR/display"
[journal]
path = "DIR/journal.db"
[metrics]
listen = %q
[log]
level = "debug"
`, url, pollInterval, l.metrics), 0o600)
	return l
}

// start runs the daemon and waits for READY=1.
func (l *e2eLane) start() {
	l.t.Helper()
	l.logs = newSafeBuffer()
	l.proc = exec.Command(binary, "run", "--config", l.config)
	if len(l.launcher) > 0 {
		l.proc = exec.Command(l.launcher[0], append(l.launcher[1:], "run", "--config", l.config)...)
	}
	l.proc.Env = append(append(os.Environ(), "NOTIFY_SOCKET="+filepath.Join(l.dir, "notify.sock"), "WATCHDOG_USEC=400000"), l.env...)
	l.proc.Stderr = l.logs
	l.proc.Stdout = l.logs
	if err := l.proc.Start(); err != nil {
		l.t.Fatal(err)
	}
	l.exited = make(chan error, 1)
	go func() { l.exited <- l.proc.Wait() }()
	l.t.Cleanup(func() { l.proc.Process.Kill() })
	l.waitNotify("READY=1")
	// The serial links are up once their ports are in raw mode (until then
	// the ttys would echo): the daemon reports each device up.
	for _, dev := range []string{"scanner", "ecr", "display"} {
		up := fmt.Sprintf(`scanpay_device_up{device=%q} 1`, dev)
		l.eventually(dev+" up", func() bool { return strings.Contains(l.get("/metrics"), up) })
	}
}

// get fetches a page from the daemon's metrics server ("" if it fails).
func (l *e2eLane) get(path string) string {
	resp, err := http.Get("http://" + l.metrics + path)
	if err != nil {
		return ""
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// eventually waits up to 10 s for cond.
func (l *e2eLane) eventually(what string, cond func() bool) {
	l.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			l.t.Fatalf("timed out waiting for %s:\n%s", what, l.logs.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// awaitingCode waits until the lane has taken the amount and waits for a
// code (a code scanned earlier would be refused as "no amount").
func (l *e2eLane) awaitingCode() {
	l.t.Helper()
	l.eventually("the lane awaiting a code", func() bool { return strings.Contains(l.get("/healthz"), `"state":"AWAITING_CODE"`) })
}

func (l *e2eLane) waitNotify(want string) string {
	l.t.Helper()
	timeout := time.After(15 * time.Second)
	for {
		select {
		case msg := <-l.notify:
			if strings.Contains(msg, want) {
				return msg
			}
		case err := <-l.exited:
			l.t.Fatalf("daemon exited (%v) before %s:\n%s", err, want, l.logs.String())
		case <-timeout:
			l.t.Fatalf("no %s from the daemon:\n%s", want, l.logs.String())
		}
	}
}

func (l *e2eLane) stop() {
	l.proc.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-l.exited:
		if err != nil {
			l.t.Fatalf("daemon exit: %v\n%s", err, l.logs.String())
		}
	case <-time.After(10 * time.Second):
		l.t.Fatal("daemon did not stop on SIGTERM")
	}
}

func request(amount int64, ref string) ecr.Request {
	return ecr.Request{POS: "01", Amount: amount, FullAnswer: true, Mode: '1', Type: ecr.TypePurchase, Currency: "124", Private: fmt.Sprintf("%-10s", ref)}
}

// sale plays the register and the scanner for one sale.
func (l *e2eLane) sale(amount int64, ref, code string) ecr.Result {
	l.t.Helper()
	if err := l.send(request(amount, ref)); err != nil {
		l.t.Fatalf("send: %v\n%s", err, l.logs.String())
	}
	l.awaitingCode()
	l.scanner.Master().Write([]byte(code + "\r\n"))
	res, err := l.reg.Receive(20*time.Second, true)
	if err != nil {
		l.t.Fatalf("receive: %v\n%s", err, l.logs.String())
	}
	return res
}

// send retries while the e2eLane is busy (NAK), as registers do.
func (l *e2eLane) send(r ecr.Request) error {
	var err error
	for i := 0; i < 50; i++ {
		if err = l.reg.Send(r); err != ecrtest.ErrRefused {
			return err
		}
		time.Sleep(200 * time.Millisecond)
	}
	return err
}

func (l *e2eLane) cli(args ...string) string {
	l.t.Helper()
	out, err := exec.Command(binary, append(args, "--config", l.config)...).Output()
	if err != nil {
		l.t.Fatalf("scanpay %v: %v\n%s", args, err, out)
	}
	return string(out)
}

func (l *e2eLane) orders(open bool) []orderJSON {
	args := []string{"orders", "--format", "json"}
	if open {
		args = append(args, "--open")
	}
	var list []orderJSON
	if err := json.Unmarshal([]byte(l.cli(args...)), &list); err != nil {
		l.t.Fatal(err)
	}
	return list
}

func (l *e2eLane) waitScreen(text string) {
	l.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(l.screen.String(), text) {
		if time.Now().After(deadline) {
			l.t.Fatalf("display never showed %q; it got %q", text, l.screen.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test")
	}
	l := newLane(t, "100ms")
	l.start()

	// An approved sale from the register, code from the serial scanner.
	res := l.sale(2865, "INV1", "134567890123456789")
	paid := l.sim.PaidOrders()
	if res.Status != ecr.StatusApproved || res.Amount != 2865 || len(paid) != 1 {
		t.Fatalf("approved sale: %+v, gateway paid %v", res, paid)
	}
	o, _ := l.sim.Order(paid[0])
	if got := strings.TrimSpace(res.Report); got != "WX "+o.PayOrderID {
		t.Fatalf("report %q, want WX %s", got, o.PayOrderID)
	}
	l.waitScreen("Approved      $28.65")
	list := l.orders(false)
	if len(list) != 1 || list[0].State != "PAID" || list[0].PayOrderID != o.PayOrderID || list[0].Amount != 2865 || list[0].Channel != "WX_MICROPAY" || list[0].CreatedAt == "" {
		t.Fatalf("orders %+v", list)
	}
	var rep struct {
		PaidCount  int   `json:"paidCount"`
		PaidAmount int64 `json:"paidAmount"`
	}
	json.Unmarshal([]byte(l.cli("report", "--format", "json")), &rep)
	if rep.PaidCount != 1 || rep.PaidAmount != 2865 {
		t.Fatalf("report %+v", rep)
	}

	// Declined.
	if res := l.sale(1051, "INV2", "2812345678901234"); res.Status != ecr.StatusRefused {
		t.Fatalf("declined: %+v", res)
	}
	l.waitScreen("Declined      $10.51")

	// A lost reply, recovered by query: one order, paid once.
	if res := l.sale(1055, "INV3", "6212345678901234567"); res.Status != ecr.StatusApproved {
		t.Fatalf("lost reply: %+v", res)
	}
	if n := len(l.sim.Orders()); n != 3 {
		t.Fatalf("%d gateway orders", n)
	}

	// A late payment: not confirmed within the window (never approved),
	// found paid by the reconciler afterwards and refunded (refund_late is
	// on by default): nothing is left open.
	if res := l.sale(1054, "INV4", "104567890123456789"); res.Status != ecr.StatusNotVerified {
		t.Fatalf("late payment: %+v", res)
	}
	l.waitScreen("Not confirmed $10.54")
	l.clock.Advance(91 * time.Second)
	deadline := time.Now().Add(15 * time.Second)
	for {
		var late *orderJSON
		for _, o := range l.orders(false) {
			if o.ECRRef == "INV4" {
				late = &o
			}
		}
		if late != nil && late.State == "LATE_PAID" && late.Refunded == 1054 && len(l.orders(true)) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("late payment not found and refunded: %+v", late)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if n := len(l.sim.Refunds()); n != 1 {
		t.Fatalf("%d refunds at the gateway", n)
	}

	// The same code again: refused at the e2eLane, no order.
	if err := l.send(request(700, "INV5")); err != nil {
		t.Fatal(err)
	}
	l.awaitingCode()
	l.scanner.Master().Write([]byte("134567890123456789\r"))
	l.waitScreen("Code already used")
	if n := len(l.sim.Orders()); n != 4 {
		t.Fatalf("a used code reached the gateway: %d orders", n)
	}

	// Metrics after the sales. Go's client asks for gzip, as Prometheus
	// does; the lane answers plain text (a compressor per scrape costs
	// the lane more memory than the bytes are worth on its network).
	resp, err := http.Get("http://" + l.metrics + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.Uncompressed {
		t.Error("metrics were served gzipped")
	}
	for _, want := range []string{
		`scanpay_sales_total{channel="WX_MICROPAY",outcome="PAID"} 1`,
		`scanpay_sales_total{channel="ALIPAY_MICROPAY",outcome="DECLINED"} 1`,
		`scanpay_sales_total{channel="UPI_MICROPAY",outcome="PAID"} 1`,
		`scanpay_sales_total{channel="WX_MICROPAY",outcome="UNCONFIRMED"} 1`,
		`scanpay_sales_total{channel="WX_MICROPAY",outcome="LATE_PAID"} 1`,
		`scanpay_open_orders{state="LATE_PAID"} 0`,
		`scanpay_alerts_total{kind="late_payment"} 1`,
		`scanpay_scans_rejected_total{reason="used"} 1`,
		`scanpay_device_up{device="scanner"} 1`,
		`scanpay_build_info{`,
		`scanpay_journal_commit_seconds_count`,
		`scanpay_gateway_request_seconds_count{endpoint="create_order",result="unknown"} 1`,
	} {
		if !strings.Contains(string(body), want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	resp, err = http.Get("http://" + l.metrics + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	hb, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(hb), `"state":"AWAITING_CODE"`) {
		t.Fatalf("healthz %d %s", resp.StatusCode, hb)
	}
	// Watchdog pings with the e2eLane's status keep coming.
	l.waitNotify("WATCHDOG=1")
	l.stop()

	// No full code or key in the logs.
	logs := l.logs.String()
	if !strings.Contains(logs, "used payment codes checked in memory") {
		t.Error("the code filter's load was not logged")
	}
	for _, secret := range []string{"134567890123456789", "2812345678901234", "TESTKEY1234567890"} {
		if strings.Contains(logs, secret) {
			t.Errorf("logs contain %s", secret)
		}
	}
}

func TestKillAndRestart(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test")
	}
	l := newLane(t, "700ms")
	l.start()
	if err := l.send(request(1052, "KILL1")); err != nil {
		t.Fatal(err)
	}
	l.awaitingCode()
	l.scanner.Master().Write([]byte("134567890123456789\r"))
	// Kill while the order is being polled (status 1, paid on the 3rd query).
	deadline := time.Now().Add(10 * time.Second)
	for {
		orders := l.sim.Orders()
		if len(orders) == 1 && orders[0].Queries >= 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("order never polled:\n%s", l.logs.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	l.proc.Process.Signal(syscall.SIGKILL)
	<-l.exited
	if o := l.sim.Orders()[0]; o.Status != 1 {
		t.Fatalf("the order settled before the kill (status %d): test timing", o.Status)
	}
	// Restart on the same journal: the order is resumed and settled, and
	// the register, asking again, gets its result.
	l.start()
	res := func() ecr.Result {
		if err := l.send(request(1052, "KILL1")); err != nil {
			t.Fatal(err)
		}
		r, err := l.reg.Receive(20*time.Second, true)
		if err != nil {
			t.Fatalf("%v\n%s", err, l.logs.String())
		}
		return r
	}()
	if res.Status != ecr.StatusApproved {
		t.Fatalf("result after restart: %+v\n%s", res, l.logs.String())
	}
	if n := len(l.sim.Orders()); n != 1 {
		t.Fatalf("%d gateway orders after restart", n)
	}
	list := l.orders(false)
	if len(list) != 1 || list[0].State != "PAID" {
		t.Fatalf("journal %+v", list)
	}
	l.stop()

}
