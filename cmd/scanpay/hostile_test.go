package main

// The hostile-input suite of the daemon (issue 16): floods of bad input
// keep the log readable, the metrics server stays bounded under idle
// connections, SIGTERM ends a start-up on a huge config, and the service
// works without the address families its unit denies. Each test asserts
// its bound; `go test -run Hostile ./...` runs the whole suite.

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/scanpay/scanpay/config"
	"github.com/scanpay/scanpay/device/input"
	"github.com/scanpay/scanpay/device/serial/serialtest"
	"github.com/scanpay/scanpay/display"
	"github.com/scanpay/scanpay/ecr"
	"github.com/scanpay/scanpay/keypad"
	"github.com/scanpay/scanpay/payment"
	"github.com/scanpay/scanpay/payment/iotpaysim"
)

// waitUntil polls cond (up to a minute: the floods are large and the
// race detector slow) and fails with what.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Register garbage, scanner noise, a stuck keypad key and a register
// hammering a busy lane, each far beyond journald's rate limit: the log
// passes a few lines of each per interval and then one summary, and the
// metrics count every event (before: ~2 500 lines for 1 MB of register
// garbage, ~8 000 for 2 MB of scanner noise, one per key press).
func TestHostileLogFlood(t *testing.T) {
	dir := t.TempDir()
	url, stopSim, _ := startSim(t, iotpaysim.NewFakeClock(time.Now()))
	defer stopSim()
	scan := serialtest.NewPort(t, dir, "scanner")
	ecrAddr := freePort(t)
	cfg, err := config.Parse([]byte(fmt.Sprintf("[gateway]\nurl = %q\nmch_id = \"10000576\"\njob_no = \"c\"\nkey_file = \"unused\"\n"+
		"[scanner]\ndriver = \"serial\"\ndevice = %q\n[ecr]\nlisten = %q\n[journal]\npath = %q\n", url, scan.Link, ecrAddr, filepath.Join(dir, "j.db"))))
	if err != nil {
		t.Fatal(err)
	}
	logs := newSafeBuffer()
	log := newLogger(config.Log{Level: "info", Format: "json"}, logs)
	m := newMetrics("test")
	d, err := build(cfg, "TESTKEY1234567890", log, overrides{screen: &display.Console{Layout: display.Layout{Width: 20}, Out: io.Discard},
		observer: m, clockSynced: func() (bool, error) { return true, nil }})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.run(ctx) }()
	<-d.term.Ready()
	waitUntil(t, "the scanner up", func() bool { return metricValue(m, `scanpay_device_up{device="scanner"}`) == 1 })

	// 2 MB of scanner noise: 35 000 lines with control bytes, shorter
	// than scanner.max_length.
	const noiseLines = 35000
	noise := bytes.Repeat([]byte("\x01\x02"+strings.Repeat("~", 56)+"\r\n"), noiseLines)
	go scan.Master().Write(noise)
	// A stuck 0 key on an empty amount: 10 000 refused presses.
	const presses = 10000
	ed := keypad.NewEditor(keypad.Config{OnRefuse: m.keyRefused})
	klog := log.Named("keypad")
	for range presses {
		keypad.Feed(ctx, ed, input.KeyKP0, keypadSink{d.term}, klog)
	}
	// 1 MB of register garbage: exchanges opened and fed frames with a
	// bad LRC, over TCP.
	garbage := bytes.Repeat([]byte{ecr.ENQ, ecr.STX, '0', '1', 'x', 'y', 'z', ecr.ETX, 'Q', ecr.STX, 'q', ecr.ETX, 0, ecr.STX, 'w', ecr.ETX, 0}, 1<<20/17)
	register(t, ecrAddr, garbage, nil)
	// A register asking 5 000 times while a sale waits for its code.
	if err := d.term.RequestSale(ctx, payment.SaleRequest{Amount: 100, Source: payment.SourceKeypad}); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "the lane busy", func() bool { return d.term.State() == payment.StateAwaitingCode })
	register(t, ecrAddr, bytes.Repeat([]byte{ecr.ENQ}, 5000), func() bool {
		return metricValue(m, `scanpay_ecr_answers_total{kind="busy",status="NAK"}`) == 5000
	})
	waitUntil(t, "the scanner noise read", func() bool {
		return metricValue(m, `scanpay_scans_rejected_total{reason="control"}`) == noiseLines
	})
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	log.Sync()
	elapsed := time.Since(start)

	lines := logLines(t, logs.String())
	windows := int(elapsed/floodInterval) + 1
	for _, f := range []struct {
		msg   string
		count float64
	}{
		{"scanner line dropped", metricValue(m, `scanpay_scans_rejected_total{reason="control"}`)},
		{"key refused", metricValue(m, `scanpay_keys_refused_total{reason="leading zero"}`)},
		{"ECR frame refused", metricValue(m, `scanpay_ecr_answers_total{kind="frame",status="NAK"}`)},
		{"ECR request refused: the lane is busy", metricValue(m, `scanpay_ecr_answers_total{kind="busy",status="NAK"}`)},
	} {
		passed, summaries, suppressed := 0, 0, 0.0
		for _, l := range lines {
			msg, _ := l["msg"].(string)
			switch {
			case msg == f.msg:
				passed++
			case strings.HasPrefix(msg, f.msg+" … and "):
				summaries++
				suppressed += l["suppressed"].(float64)
			}
		}
		t.Logf("%s: %.0f events, %d lines passed, %d summaries in %s", f.msg, f.count, passed, summaries, elapsed.Round(time.Millisecond))
		if f.count < 1000 {
			t.Errorf("%s: only %.0f events: the flood did not happen", f.msg, f.count)
		}
		// The bound: a burst and a summary per interval.
		if passed > floodBurst*windows || summaries > windows {
			t.Errorf("%s: %d lines and %d summaries in %d interval(s), want at most %d and %d", f.msg, passed, summaries, windows, floodBurst*windows, windows)
		}
		// The metrics keep the full count; the summaries account for it.
		if float64(passed)+suppressed != f.count {
			t.Errorf("%s: %d passed + %.0f summarised ≠ %.0f counted", f.msg, passed, suppressed, f.count)
		}
	}
	if len(lines) > 200 {
		t.Errorf("%d log lines for the whole flood", len(lines))
	}
}

// register connects to the link at addr, writes data while draining the
// answers, waits for done when given, and hangs up. It returns once the
// link has closed its end, that is, once it is done with the connection
// (bytes still queued at the hang-up may be dropped, as from a register
// that resets).
func register(t *testing.T, addr string, data []byte, done func() bool) {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	drained := make(chan struct{})
	go func() { io.Copy(io.Discard, conn); close(drained) }()
	if _, err := conn.Write(data); err != nil {
		t.Fatal(err)
	}
	if done != nil {
		waitUntil(t, "the register's requests answered", done)
	}
	conn.(*net.TCPConn).CloseWrite()
	<-drained
	conn.Close()
}

// metricValue reads one series from the lane's metrics as Prometheus
// would scrape it; 0 when absent.
func metricValue(m *metrics, series string) float64 {
	rec := httptest.NewRecorder()
	promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{}).ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	sc := bufio.NewScanner(rec.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), series+" "); ok {
			f, _ := strconv.ParseFloat(v, 64)
			return f
		}
	}
	return 0
}

// unitSettings reads the Key=Value lines of systemd/scanpay.service (the
// last one of a key wins, as in systemd; Environment= is split further).
func unitSettings(t *testing.T) map[string]string {
	t.Helper()
	data, err := os.ReadFile("../../systemd/scanpay.service")
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, l := range strings.Split(string(data), "\n") {
		k, v, ok := strings.Cut(strings.TrimSpace(l), "=")
		if !ok || strings.HasPrefix(k, "#") {
			continue
		}
		if k == "Environment" {
			k, v, _ = strings.Cut(v, "=")
		}
		out[k] = v
	}
	return out
}

// unitBytes reads a systemd size (K, M, G are powers of 1024).
func unitBytes(t *testing.T, s string) int64 {
	t.Helper()
	mult := int64(1)
	switch {
	case strings.HasSuffix(s, "K"):
		mult = 1 << 10
	case strings.HasSuffix(s, "M"):
		mult = 1 << 20
	case strings.HasSuffix(s, "G"):
		mult = 1 << 30
	}
	n, err := strconv.ParseInt(strings.TrimRight(s, "KMG"), 10, 64)
	if err != nil || n <= 0 {
		t.Fatalf("unit size %q", s)
	}
	return n * mult
}

// procUsage is what the daemon uses now: resident memory, open files,
// threads.
type procUsage struct {
	rss            int64
	files, threads int
}

func procUse(t *testing.T, pid int) procUsage {
	t.Helper()
	var u procUsage
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(status), "\n") {
		f := strings.Fields(l)
		switch {
		case len(f) >= 2 && f[0] == "VmRSS:":
			kb, _ := strconv.ParseInt(f[1], 10, 64)
			u.rss = kb << 10
		case len(f) >= 2 && f[0] == "Threads:":
			u.threads, _ = strconv.Atoi(f[1])
		}
	}
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		t.Fatal(err)
	}
	u.files = len(fds)
	return u
}

// 4 000 idle keep-alive connections to the metrics server: the daemon
// serves a bounded number at once, so its memory stays far under the
// unit's MemoryMax (and within a few MB of where it was), its files
// and threads under LimitNOFILE and TasksMax, and it is back where it
// was once they close. Before: RSS 26 → 101 MB, and it stayed there.
func TestHostileMetricsIdleConnections(t *testing.T) {
	unit := unitSettings(t)
	memMax := unitBytes(t, unit["MemoryMax"])
	tasksMax, _ := strconv.Atoi(unit["TasksMax"])
	nofile, _ := strconv.Atoi(unit["LimitNOFILE"])
	if tasksMax == 0 || nofile == 0 || unit["GOMEMLIMIT"] == "" {
		t.Fatalf("the unit lacks TasksMax, LimitNOFILE or GOMEMLIMIT: %v", unit)
	}
	dir := t.TempDir()
	listen := freePort(t)
	path := writeConfig(t, dir, basicConfig+"[terminal]\nrequire_clock_sync = false\n[metrics]\nlisten = \""+listen+"\"\n", 0o600)
	logs := newSafeBuffer()
	cmd := exec.Command(binary, "run", "--config", path)
	cmd.Env = append(os.Environ(), "GOMEMLIMIT="+unit["GOMEMLIMIT"])
	cmd.Stderr, cmd.Stdout = logs, logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	defer cmd.Process.Kill()
	get := func(p string) int {
		resp, err := http.Get("http://" + listen + p)
		if err != nil {
			return 0
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	waitUntil(t, "the daemon healthy", func() bool { return get("/healthz") == http.StatusOK })
	for range 20 {
		get("/metrics")
	}
	http.DefaultClient.CloseIdleConnections()
	pid := cmd.Process.Pid
	before := procUse(t, pid)

	const idle = 4000
	conns := make([]net.Conn, 0, idle)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for range idle {
		c, err := net.DialTimeout("tcp", listen, 10*time.Second)
		if err != nil {
			t.Fatalf("connection %d: %v", len(conns)+1, err)
		}
		conns = append(conns, c)
		c.Write([]byte("GET /healthz HTTP/1.1\r\nHost: scanpay\r\n\r\n"))
	}
	// The bound must hold at every look while they stay open.
	peak := before
	for range 40 {
		u := procUse(t, pid)
		peak.rss, peak.files, peak.threads = max(peak.rss, u.rss), max(peak.files, u.files), max(peak.threads, u.threads)
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("before: RSS %d MB, %d files, %d threads; with %d idle connections: RSS %d MB, %d files, %d threads",
		before.rss>>20, before.files, before.threads, idle, peak.rss>>20, peak.files, peak.threads)
	if peak.rss >= memMax || peak.rss-before.rss > 24<<20 {
		t.Errorf("RSS %d MB with %d idle connections (from %d MB; MemoryMax %d MB)", peak.rss>>20, idle, before.rss>>20, memMax>>20)
	}
	if peak.files-before.files > metricsMaxConns+2 || peak.files >= nofile {
		t.Errorf("%d open files with %d idle connections (from %d; LimitNOFILE %d)", peak.files, idle, before.files, nofile)
	}
	if peak.threads >= tasksMax {
		t.Errorf("%d threads (TasksMax %d)", peak.threads, tasksMax)
	}
	for _, c := range conns {
		c.Close()
	}
	conns = nil
	// Once they close, the daemon answers again and its memory is back.
	waitUntil(t, "the daemon answering after the connections closed", func() bool { return get("/healthz") == http.StatusOK })
	http.DefaultClient.CloseIdleConnections()
	waitUntil(t, "memory back near where it was", func() bool { return procUse(t, pid).rss <= before.rss+8<<20 })
	cmd.Process.Signal(syscall.SIGTERM)
	if err := <-exited; err != nil {
		t.Fatalf("exit: %v\n%s", err, logs.String())
	}
}

var (
	// Input devices match on their own ids (id/vendor), tty adapters on
	// their USB parent's (idVendor): both spellings are the same key here.
	udevMatch = regexp.MustCompile(`(SUBSYSTEM|ATTRS\{(?:idVendor|id/vendor)\}|ATTRS\{(?:idProduct|id/product)\})=="([^"]*)"`)
	udevLink  = regexp.MustCompile(`SYMLINK\+="scanpay/([a-z]+)"`)
)

// udevKey names a match key one way whichever attribute spelling it uses.
func udevKey(k string) string {
	return strings.NewReplacer("id/vendor", "idVendor", "id/product", "idProduct").Replace(k)
}

// udevLinks returns the /dev/scanpay links the rules give a USB device
// (subsystem input or tty, vendor:product), matching as udev does: every
// match key of a rule must hold, "|" separates alternatives.
func udevLinks(t *testing.T, rules, subsystem, vendor, product string) []string {
	t.Helper()
	var links []string
	for _, line := range strings.Split(rules, "\n") {
		line = strings.TrimSpace(line)
		l := udevLink.FindStringSubmatch(line)
		if strings.HasPrefix(line, "#") || l == nil {
			continue
		}
		link := l[1]
		want := map[string]string{"SUBSYSTEM": subsystem, "ATTRS{idVendor}": vendor, "ATTRS{idProduct}": product}
		matches := true
		for _, m := range udevMatch.FindAllStringSubmatch(line, -1) {
			matches = matches && slices.Contains(strings.Split(m[2], "|"), want[udevKey(m[1])])
		}
		if matches {
			links = append(links, link)
		}
	}
	return links
}

// Every scanner rule names a vendor and its scanner models: another
// device of the same maker (before: any Honeywell or Zebra device) never
// becomes /dev/scanpay/scanner, hidden from the console.
func TestHostileUdevScannerRules(t *testing.T) {
	data, err := os.ReadFile("../../deploy/udev/70-scanpay.rules")
	if err != nil {
		t.Fatal(err)
	}
	rules := string(data)
	hex4 := regexp.MustCompile(`^[0-9a-f]{4}(\|[0-9a-f]{4})*$`)
	for _, line := range strings.Split(rules, "\n") {
		if strings.HasPrefix(line, "#") || !strings.Contains(line, `SYMLINK+="scanpay/scanner"`) {
			continue
		}
		keys := map[string]string{}
		for _, m := range udevMatch.FindAllStringSubmatch(line, -1) {
			keys[udevKey(m[1])] = m[2]
		}
		if !hex4.MatchString(keys["ATTRS{idVendor}"]) || !hex4.MatchString(keys["ATTRS{idProduct}"]) || strings.Contains(keys["ATTRS{idVendor}"], "|") {
			t.Errorf("a scanner rule must name one vendor and its products: %s", line)
		}
	}
	for _, tc := range []struct {
		subsystem, vendor, product string
		want                       []string
	}{
		{"input", "0c2e", "0b81", []string{"scanner"}}, // Honeywell Voyager 1400g
		{"input", "05e0", "1200", []string{"scanner"}}, // Zebra/Symbol, HID keyboard
		{"input", "1eab", "0c03", []string{"scanner"}}, // Newland HR100, HID keyboard
		{"input", "0c2e", "0a64", nil},                 // another Honeywell device
		{"input", "05e0", "0800", nil},                 // a Symbol wireless LAN adapter
		{"input", "1eab", "0c10", nil},                 // Newland in HID POS mode, not a keyboard
		{"tty", "05e0", "1701", []string{"scanner"}},   // Zebra/Symbol, USB-CDC
		{"tty", "1eab", "0c06", []string{"scanner"}},   // Newland HR100, USB-CDC
		{"tty", "05e0", "1200", nil},
		{"input", "04d9", "1203", []string{"keypad"}},
		{"tty", "0403", "6001", []string{"ecr"}},
	} {
		if got := udevLinks(t, rules, tc.subsystem, tc.vendor, tc.product); !slices.Equal(got, tc.want) {
			t.Errorf("%s %s:%s gets links %v, want %v", tc.subsystem, tc.vendor, tc.product, got, tc.want)
		}
	}
}

// SIGTERM during start-up on the largest config scanpay reads (1 MB of
// unknown keys) ends it promptly and cleanly. Before: parsing took
// minutes (hours for 200 000 keys) and SIGTERM was ignored meanwhile.
func TestHostileConfigSIGTERM(t *testing.T) {
	dir := t.TempDir()
	var b strings.Builder
	b.WriteString(strings.NewReplacer("KEYFILE", filepath.Join(dir, "k"), "DIR", dir).Replace(basicConfig))
	b.WriteString("[terminal]\n")
	for i := 0; b.Len() < config.MaxSize-16; i++ {
		fmt.Fprintf(&b, "k%06d = 1\n", i)
	}
	path := filepath.Join(dir, "scanpay.toml")
	os.WriteFile(path, []byte(b.String()), 0o600)
	// A signal that arrives before main has asked for it kills the
	// process outright, which proves nothing: then try again, later.
	var stderr bytes.Buffer
	for delay := 20 * time.Millisecond; ; delay *= 2 {
		if delay > 5*time.Second {
			t.Fatal("SIGTERM never reached scanpay after start-up")
		}
		stderr.Reset()
		cmd := exec.Command(binary, "run", "--config", path)
		cmd.Stderr = &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		exited := make(chan error, 1)
		go func() { exited <- cmd.Wait() }()
		time.Sleep(delay)
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(30 * time.Second):
			cmd.Process.Kill()
			<-exited
			t.Fatal("scanpay ignored SIGTERM while reading its config")
		}
		if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			continue
		}
		// It stopped on the signal, cleanly (systemd asked it to stop), or
		// had just refused the keys: either way by exiting, with a message.
		interrupted := cmd.ProcessState.ExitCode() == exitOK && strings.Contains(stderr.String(), "config parsing interrupted")
		refused := cmd.ProcessState.ExitCode() == exitUsage && strings.Contains(stderr.String(), "unknown key")
		if !interrupted && !refused {
			t.Fatalf("exit %v: %s", cmd.ProcessState, stderr.String())
		}
		t.Logf("SIGTERM after %s: %s", delay, strings.SplitN(stderr.String(), "\n", 3)[:2])
		break
	}
	if stderr.Len() > 4<<10 {
		t.Errorf("%d bytes of errors for one file", stderr.Len())
	}
}

// check-config on a file that is not a scanpay config (say, a root-only
// one, with sudo) tells nothing of its content.
func TestHostileCheckConfigQuotesNothing(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "shadow")
	os.WriteFile(path, []byte("root:$6$LEAKMARKsalt$LEAKMARKhash:19000:0:99999:7:::\n[gateway]\nmch_id = \"LEAKMARK\n"), 0o600)
	c, out, errb := cli(nil)
	if code := c.Run(context.Background(), []string{"check-config", "--config", path}); code != exitUsage {
		t.Fatalf("exit %d", code)
	}
	if s := out.String() + errb.String(); strings.Contains(s, "LEAKMARK") || !strings.Contains(s, "line 1") {
		t.Fatalf("output:\n%s", s)
	}
}
