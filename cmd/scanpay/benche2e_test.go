package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/scanpay/scanpay/device/serial"
	"github.com/scanpay/scanpay/device/serial/serialtest"
	"github.com/scanpay/scanpay/ecr"
	"github.com/scanpay/scanpay/ecr/ecrtest"
	"github.com/scanpay/scanpay/payment/iotpay"
	"github.com/scanpay/scanpay/payment/iotpaysim"
	"github.com/scanpay/scanpay/payment/journal"
)

// The end-to-end benchmark (make bench-e2e): the real binary with ptys for
// the register, the scanner and the display, against a loopback gateway
// that pays at once; and, in the same run, a floor program that reads the
// same pty and sends the same signed form with net/http. It measures, per
// sale, scan CR → create_order on the wire and the gateway's last reply →
// display bytes; CPU, context switches and fsyncs per sale; RSS every 1000
// sales; READY with a large journal, warm and with the page cache dropped.
// Timings are printed, never asserted.

const benchKey = "TESTKEY1234567890"

// fsyncSales are the sales over which fsyncs are counted (with strace).
const fsyncSales = 200

// benchGateway is the simulator with the two timestamps the benchmark
// needs: when a create_order request arrives, and when the last reply left.
type benchGateway struct {
	sim *iotpaysim.Sim
	mu  sync.Mutex
	// createAt is when the newest create_order reached the socket (the
	// kernel's stamp, benchwire_test.go), createSeen when its handler ran;
	// replyAt when the newest reply left it (the kernel's send stamp).
	createAt, createSeen, replyAt time.Time
	unstamped                     int // requests the kernel gave no receive stamp for
	unstampedReplies              int // replies it gave no send stamp for
}

func (g *benchGateway) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	wire := wireArrival(r) // every request's, so that none is left for the next
	if strings.HasSuffix(r.URL.Path, "create_order") {
		now := time.Now()
		if wire.After(now) || now.Sub(wire) > time.Second {
			wire = time.Time{} // not this request's (or a clock step): not used
		}
		if wire.IsZero() {
			wire = now
			g.mu.Lock()
			g.unstamped++
			g.mu.Unlock()
		}
		g.mu.Lock()
		g.createAt, g.createSeen = wire, now
		g.mu.Unlock()
	}
	// The reply goes out whole, with its length, in one write, as a real
	// gateway's small JSON reply does: a flush mid-reply would send it
	// chunked, its end in a second segment that the client must wait for.
	rec := httptest.NewRecorder()
	g.sim.ServeHTTP(rec, r)
	for k, v := range rec.Header() {
		w.Header()[k] = v
	}
	w.Header().Set("Content-Length", strconv.Itoa(rec.Body.Len()))
	w.WriteHeader(rec.Code)
	w.Write(rec.Body.Bytes())
	if f, ok := w.(http.Flusher); ok {
		f.Flush()
	}
	now := time.Now()
	sent := wireDeparture(r)
	if sent.After(now) || now.Sub(sent) > time.Second {
		sent = time.Time{}
	}
	g.mu.Lock()
	if sent.IsZero() {
		sent = now
		g.unstampedReplies++
	}
	g.replyAt = sent
	g.mu.Unlock()
	wireArrival(r) // a stamp of this request's later bytes is not the next one's
}

func (g *benchGateway) unstamps() (requests, replies int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.unstamped, g.unstampedReplies
}

func (g *benchGateway) times() (create, seen, reply time.Time) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.createAt, g.createSeen, g.replyAt
}

// screenWatch reads a display pty and remembers when each byte arrived.
type screenWatch struct {
	mu   sync.Mutex
	buf  []byte
	at   []time.Time // read time for each byte's chunk end
	wake chan struct{}
	stop func()    // ends the reader (also at the test's end)
	rt   chan bool // whether the reader's thread got SCHED_FIFO
}

// watchScreen starts reading the display pty f. The reader keeps an OS
// thread of its own, blocked in poll(2) on the pty, and takes its
// timestamp as the kernel wakes it. A reader going through this process's
// netpoller and scheduler would add the wake-up of an idle thread, a delay
// that depends on how long the process has been idle: the gateway, served
// by this same process, keeps it warm for a program that answers within a
// few microseconds of the reply and not for one that takes longer. The
// thread is real-time (SCHED_FIFO, when the test may set it): woken, it
// runs at once instead of waiting for a core that the measured program,
// still busy after its display write (scanpay answers the register and
// commits), may hold. Both sides are read this way.
func watchScreen(t *testing.T, f *os.File) *screenWatch {
	s := &screenWatch{wake: make(chan struct{}, 1), rt: make(chan bool, 1)}
	raw, err := f.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var fd int
	raw.Control(func(p uintptr) { fd = int(p) })
	stop, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		runtime.LockOSThread()
		// The thread is not handed back to the runtime (no Unlock): it
		// ends with the goroutine rather than run others at real-time.
		s.rt <- unix.SchedSetAttr(0, &unix.SchedAttr{Size: unix.SizeofSchedAttr, Policy: unix.SCHED_FIFO, Priority: 10}, 0) == nil
		b := make([]byte, 4096)
		for {
			select {
			case <-stop:
				return
			default:
			}
			pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
			n, err := unix.Poll(pfd, 50)
			if err != nil && err != unix.EINTR {
				return
			}
			if n <= 0 {
				continue
			}
			n, err = unix.Read(fd, b)
			now := time.Now()
			if n > 0 {
				s.mu.Lock()
				s.buf = append(s.buf, b[:n]...)
				for i := 0; i < n; i++ {
					s.at = append(s.at, now)
				}
				s.mu.Unlock()
				select {
				case s.wake <- struct{}{}:
				default:
				}
			}
			if err != nil && err != unix.EAGAIN && err != unix.EINTR {
				return
			}
		}
	}()
	var once sync.Once
	s.stop = func() { once.Do(func() { close(stop); <-done }) }
	t.Cleanup(s.stop)
	return s
}

func (s *screenWatch) mark() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.buf)
}

// wait returns when marker appeared after offset from.
func (s *screenWatch) wait(t *testing.T, from int, marker string) time.Time {
	deadline := time.After(10 * time.Second)
	for {
		s.mu.Lock()
		if i := bytes.Index(s.buf[from:], []byte(marker)); i >= 0 {
			at := s.at[from+i+len(marker)-1]
			s.mu.Unlock()
			return at
		}
		s.mu.Unlock()
		select {
		case <-s.wake:
		case <-deadline:
			t.Fatalf("display never showed %q", marker)
		}
	}
}

// procStats reads a process's CPU time, context switches and RSS.
type procStats struct {
	cpu      time.Duration
	switches int64
	rssKiB   int64
	anonKiB  int64 // RssAnon: the heap, stacks, SQLite's cache
	fileKiB  int64 // RssFile: mostly the binary's code
}

func readProc(pid int) procStats {
	var st procStats
	// CPU time from each thread's schedstat, in nanoseconds (/proc/pid/stat
	// counts 10 ms ticks).
	stats, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/schedstat", pid))
	for _, p := range stats {
		if b, err := os.ReadFile(p); err == nil {
			if f := strings.Fields(string(b)); len(f) > 0 {
				ns, _ := strconv.ParseInt(f[0], 10, 64)
				st.cpu += time.Duration(ns)
			}
		}
	}
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/status", pid))
	for _, p := range tasks {
		b, _ := os.ReadFile(p)
		for _, line := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(line, "voluntary_ctxt_switches:") || strings.HasPrefix(line, "nonvoluntary_ctxt_switches:") {
				n, _ := strconv.ParseInt(strings.TrimSpace(strings.SplitN(line, ":", 2)[1]), 10, 64)
				st.switches += n
			}
		}
	}
	if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid)); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			f := strings.Fields(line)
			if len(f) < 2 {
				continue
			}
			switch f[0] {
			case "VmRSS:":
				st.rssKiB, _ = strconv.ParseInt(f[1], 10, 64)
			case "RssAnon:":
				st.anonKiB, _ = strconv.ParseInt(f[1], 10, 64)
			case "RssFile:":
				st.fileKiB, _ = strconv.ParseInt(f[1], 10, 64)
			}
		}
	}
	return st
}

// stats summarises latencies.
func stats(d []time.Duration) (median, p99, max time.Duration) {
	if len(d) == 0 {
		return
	}
	s := append([]time.Duration(nil), d...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[len(s)/2], s[len(s)*99/100], s[len(s)-1]
}

func ms(d time.Duration) string { return fmt.Sprintf("%.3f ms", float64(d)/float64(time.Millisecond)) }

type benchResult struct {
	name                      string
	scanWire, replyDisplay    []time.Duration
	scanHandler               []time.Duration // scan CR → the gateway's handler
	screenRT                  bool            // the display was read by a real-time thread
	gw                        *benchGateway
	cpuPerSale, switchPerSale float64
	fsyncPerSale              float64
	rss                       []procStats // every 1000 sales
	memory                    string      // what the last RSS is made of
	heap                      string      // Go heap allocation and GC cycles per sale (memory phase)
}

// fsyncCounter counts fsync-family system calls of a process with strace.
type fsyncCounter struct {
	cmd *exec.Cmd
	out *bytes.Buffer
}

func countFsyncs(pid int) *fsyncCounter {
	if _, err := exec.LookPath("strace"); err != nil {
		return nil
	}
	c := &fsyncCounter{out: &bytes.Buffer{}}
	c.cmd = exec.Command("strace", "-f", "-c", "--seccomp-bpf", "-e", "trace=fsync,fdatasync,sync_file_range", "-p", strconv.Itoa(pid))
	c.cmd.Stderr = c.out
	if err := c.cmd.Start(); err != nil {
		return nil
	}
	time.Sleep(500 * time.Millisecond) // attached
	return c
}

func (c *fsyncCounter) stop() int {
	if c == nil {
		return -1
	}
	c.cmd.Process.Signal(os.Interrupt)
	c.cmd.Wait()
	n := 0
	for _, line := range strings.Split(c.out.String(), "\n") {
		f := strings.Fields(line)
		if len(f) >= 5 && (f[len(f)-1] == "fsync" || f[len(f)-1] == "fdatasync" || f[len(f)-1] == "sync_file_range") {
			calls, _ := strconv.Atoi(f[3])
			n += calls
		}
	}
	return n
}

// TestBenchE2E runs only with SCANPAY_BENCH_E2E=1 (make bench-e2e).
func TestBenchE2E(t *testing.T) {
	if os.Getenv("SCANPAY_BENCH_E2E") == "" {
		t.Skip("the end-to-end benchmark runs with make bench-e2e")
	}
	sales := benchEnv("SCANPAY_BENCH_SALES", 1000)
	rssSales := benchEnv("SCANPAY_BENCH_RSS_SALES", 10000)
	big := benchEnv("SCANPAY_BENCH_JOURNAL_ORDERS", 100000)
	dir := benchDir(t)

	// Both programs run twice: bare (the kernel's default timer slack, as
	// a program started by hand) and as the lane's systemd unit runs
	// scanpay (its TimerSlackNSec=), which is what a shop's Pi does. The
	// memory and READY rows come from the unit's run.
	slack := unitTimerSlack(t)
	var bareLane, bareFloor, lane, floor benchResult
	if slack > 0 {
		bareLane, bareFloor = benchPair(t, dir, sales, 0, 0)
		lane, floor = benchPair(t, dir, sales, rssSales, slack)
	} else {
		bareLane, bareFloor = benchPair(t, dir, sales, rssSales, 0)
		lane, floor = bareLane, bareFloor
	}
	// An older build (SCANPAY_BENCH_BINARY) may not open a journal of
	// this schema: SCANPAY_BENCH_READY=0 leaves the READY row out.
	var warm, cold time.Duration
	ready := os.Getenv("SCANPAY_BENCH_READY") != "0"
	if ready {
		warm, cold = benchReady(t, dir, big)
	}

	w := os.Stdout
	fmt.Fprintf(w, "\nscanpay end-to-end benchmark: %d sales each, loopback gateway paying at once, journal on %s\n", sales, dir)
	block := func(title string, lane, floor benchResult) {
		fmt.Fprintf(w, "%s\n", title)
		fmt.Fprintf(w, "%-28s | %-34s | %-34s | %s\n", "path", "scanpay (median / p99 / max)", "floor (median / p99 / max)", "scanpay / floor")
		row := func(name string, a, b []time.Duration) {
			am, ap, ax := stats(a)
			bm, bp, bx := stats(b)
			fmt.Fprintf(w, "%-28s | %-34s | %-34s | median %.2f×, p99 %.2f×\n", name, ms(am)+" / "+ms(ap)+" / "+ms(ax), ms(bm)+" / "+ms(bp)+" / "+ms(bx),
				float64(am)/float64(bm), float64(ap)/float64(bp))
		}
		row("scan CR -> create on wire", lane.scanWire, floor.scanWire)
		row("  (-> gateway's handler)", lane.scanHandler, floor.scanHandler)
		row("reply -> display bytes", lane.replyDisplay, floor.replyDisplay)
		fmt.Fprintf(w, "%-28s | %-34s | %-34s\n", "CPU per sale", fmt.Sprintf("%.2f ms", lane.cpuPerSale), fmt.Sprintf("%.2f ms", floor.cpuPerSale))
		fmt.Fprintf(w, "%-28s | %-34s | %-34s\n", "context switches per sale", fmt.Sprintf("%.1f", lane.switchPerSale), fmt.Sprintf("%.1f", floor.switchPerSale))
		fmt.Fprintf(w, "%-28s | %-34s | %-34s\n", "fsyncs per sale", fmt.Sprintf("%.2f", lane.fsyncPerSale), fmt.Sprintf("%.2f", floor.fsyncPerSale))
		for _, r := range []benchResult{lane, floor} {
			if !r.screenRT {
				fmt.Fprintf(w, "  note: %s's display was read by an ordinary thread (SCHED_FIFO refused: not root?)\n", r.name)
			}
			if n, m := r.gw.unstamps(); n > 0 || m > 0 {
				fmt.Fprintf(w, "  note: of %s's, %d requests had no kernel receive stamp and %d replies no send stamp: the handler's clock stands in\n", r.name, n, m)
			}
		}
	}
	block("bare (the kernel's default timer slack):", bareLane, bareFloor)
	if slack > 0 {
		block(fmt.Sprintf("as the unit runs them (TimerSlackNSec=%v):", slack), lane, floor)
	}
	var rss []string
	for _, st := range lane.rss {
		rss = append(rss, fmt.Sprintf("%.1f (%.1f+%.1f)", float64(st.rssKiB)/1024, float64(st.anonKiB)/1024, float64(st.fileKiB)/1024))
	}
	fmt.Fprintf(w, "RSS (MiB, anon+file) every 1000 sales: %s\n  last: %s\n", strings.Join(rss, " "), lane.memory)
	if lane.heap != "" {
		fmt.Fprintf(w, "Go heap: %s\n", lane.heap)
	}
	if ready {
		fmt.Fprintf(w, "READY with %d orders: %s warm, %s with the page cache dropped\n", big, ms(warm), ms(cold))
	}
}

// benchSink is where the daemon's log goes in the benchmark: a pipe to
// another process (cat, standing in for journald), which writes it to a
// file. Under systemd the log goes to journald, not to the process that
// measures: when this test process read the pipe itself, its reading
// competed with its own timestamps of the display and the gateway.
type benchSink struct {
	path string
	cat  *exec.Cmd
	file *os.File
	w    *os.File // the pipe's write end, which the daemon inherits
	once sync.Once
}

func benchLogSink(t *testing.T, proc *exec.Cmd, path string) *benchSink {
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	s := &benchSink{path: path, file: f, w: w, cat: exec.Command("cat")}
	s.cat.Stdin, s.cat.Stdout = r, f
	if err := s.cat.Start(); err != nil {
		t.Fatal(err)
	}
	r.Close()
	proc.Stdout, proc.Stderr = w, w
	t.Cleanup(s.close)
	return s
}

// tail is the end of the log, for a failure's message.
func (s *benchSink) tail() string {
	b, _ := os.ReadFile(s.path)
	return string(b[max(0, len(b)-4000):])
}

// close waits for cat to write everything once the daemon has exited:
// with this copy of the pipe closed, cat reads to the end and stops.
func (s *benchSink) close() {
	s.once.Do(func() {
		s.w.Close()
		s.cat.Wait()
		s.file.Close()
	})
}

// unitTimerSlack is the timer slack the lane's systemd unit gives the
// daemon (TimerSlackNSec=), or 0 when it sets none.
func unitTimerSlack(t *testing.T) time.Duration {
	data, err := os.ReadFile(filepath.Join("..", "..", "systemd", "scanpay.service"))
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.Lines(string(data)) {
		v, ok := strings.CutPrefix(strings.TrimSpace(line), "TimerSlackNSec=")
		if !ok {
			continue
		}
		if n, err := strconv.ParseInt(v, 10, 64); err == nil {
			return time.Duration(n) // a bare number is nanoseconds
		}
		d, err := time.ParseDuration(v)
		if err != nil {
			t.Fatalf("scanpay.service: TimerSlackNSec=%s: %v", v, err)
		}
		return d
	}
	return 0
}

// startWithSlack starts a program of the benchmark (the lane, the floor)
// with this timer slack (0: the kernel's default), and checks that it
// took: a child inherits the slack of the thread that forks it.
func startWithSlack(t *testing.T, proc *exec.Cmd, slack time.Duration) error {
	errc := make(chan error, 1)
	go func() {
		// The thread keeps the changed slack: it is never unlocked, so it
		// ends with this goroutine instead of serving the test's others.
		runtime.LockOSThread()
		if slack > 0 {
			if err := unix.Prctl(unix.PR_SET_TIMERSLACK, uintptr(slack.Nanoseconds()), 0, 0, 0); err != nil {
				errc <- err
				return
			}
		}
		errc <- proc.Start()
	}()
	if err := <-errc; err != nil {
		return err
	}
	if slack <= 0 {
		return nil
	}
	got, err := os.ReadFile(fmt.Sprintf("/proc/%d/timerslack_ns", proc.Process.Pid))
	if errors.Is(err, os.ErrPermission) {
		// Reading another process's slack takes CAP_SYS_NICE.
		t.Logf("cannot check %s's timer slack as this user: %v", proc.Path, err)
		return nil
	}
	if err != nil || strings.TrimSpace(string(got)) != strconv.FormatInt(slack.Nanoseconds(), 10) {
		t.Fatalf("%s runs with timer slack %q (%v), want %v", proc.Path, got, err, slack)
	}
	return nil
}

func slackTag(slack time.Duration) string {
	if slack <= 0 {
		return ""
	}
	return "-slack"
}

// benchBinary is the lane binary under test: this tree's, unless
// SCANPAY_BENCH_BINARY names another build (an older commit's, for a
// before/after comparison with the same harness).
func benchBinary() string {
	if b := os.Getenv("SCANPAY_BENCH_BINARY"); b != "" {
		return b
	}
	return binary
}

// benchLogLevel is the lane's log level: info, as shipped, unless
// SCANPAY_BENCH_LOG says otherwise.
func benchLogLevel() string {
	if l := os.Getenv("SCANPAY_BENCH_LOG"); l != "" {
		return l
	}
	return "info"
}

func benchEnv(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

// benchDir is on the disk under test (SCANPAY_BENCH_DIR, else the
// current directory's disk), never tmpfs: fsync must cost what it costs.
func benchDir(t *testing.T) string {
	base := os.Getenv("SCANPAY_BENCH_DIR")
	if base == "" {
		base, _ = os.Getwd()
	}
	dir, err := os.MkdirTemp(base, "bench-e2e-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

func benchCode(i int) string { return fmt.Sprintf("13%016d", 5000000+i) }

// benchRunner is one program under measurement, started and warmed up.
type benchRunner struct {
	res  benchResult
	pid  int
	next int // the next sale's number
	// sale runs sale i and returns its latencies: scan CR to create_order
	// on the wire and to the gateway's handler, and reply to display.
	sale func(i int) (scanWire, scanHandler, replyDisplay time.Duration)
	// rssPhase runs the memory phase up to n sales in all (the lane only).
	rssPhase func(n int)
	stop     func()
	cpu      time.Duration
	switches int64
}

// batch runs n measured sales, counting only its own CPU and switches.
func (r *benchRunner) batch(n int) {
	before := readProc(r.pid)
	for k := 0; k < n; k++ {
		sw, sh, rd := r.sale(r.next)
		r.next++
		r.res.scanWire = append(r.res.scanWire, sw)
		r.res.scanHandler = append(r.res.scanHandler, sh)
		r.res.replyDisplay = append(r.res.replyDisplay, rd)
	}
	after := readProc(r.pid)
	r.cpu += after.cpu - before.cpu
	r.switches += after.switches - before.switches
}

// countFsyncs runs fsyncSales sales under strace (apart: tracing slows
// the process and would skew the other figures).
func (r *benchRunner) countFsyncs() {
	fc := countFsyncs(r.pid)
	for i := 0; i < fsyncSales; i++ {
		r.sale(r.next)
		r.next++
	}
	r.res.fsyncPerSale = float64(fc.stop()) / fsyncSales
}

// pairBatch is how many sales one program runs before the other takes
// its turn; pairSettle is the pause between turns, for what a program
// does after a sale (scanpay's taken mark and its fsync) to finish before
// the other measures.
const (
	pairBatch  = 250
	pairSettle = 100 * time.Millisecond
)

// benchPair runs scanpay and the floor side by side, taking turns every
// pairBatch sales in the order ABBA ABBA…, so that both meet the same
// stretches of a shared machine: run one after the other, a neighbour's
// burst or a frequency change lands on one program's figures only, and
// the ratio between them drifts from run to run. Within a turn the sales
// run back to back, as before. Each program's CPU and switches are
// counted over its own sales only. Then the lane alone runs its memory
// phase, up to rssSales sales in all.
func benchPair(t *testing.T, dir string, sales, rssSales int, slack time.Duration) (lane, floor benchResult) {
	l := benchLane(t, dir, slack)
	defer l.stop()
	f := benchFloor(t, dir, slack)
	defer f.stop()
	for done, turn := 0, 0; done < sales; turn++ {
		n := min(pairBatch, sales-done)
		first, second := l, f
		if turn%2 == 1 {
			first, second = f, l
		}
		time.Sleep(pairSettle)
		first.batch(n)
		time.Sleep(pairSettle)
		second.batch(n)
		done += n
	}
	for _, r := range []*benchRunner{l, f} {
		if sales > 0 {
			r.res.cpuPerSale = float64(r.cpu) / float64(time.Millisecond) / float64(sales)
			r.res.switchPerSale = float64(r.switches) / float64(sales)
			r.countFsyncs()
		}
	}
	if rssSales > 0 {
		f.stop()
		l.rssPhase(rssSales)
	}
	return l.res, f.res
}

// benchLane starts the daemon on ptys and warms it up.
func benchLane(t *testing.T, dir string, slack time.Duration) *benchRunner {
	r := &benchRunner{res: benchResult{name: "scanpay"}}
	gw := &benchGateway{sim: iotpaysim.New(iotpaysim.Options{MchID: "10000576", Key: benchKey})}
	srv := newWireServer(gw)
	ldir := filepath.Join(dir, "lane"+slackTag(slack))
	os.MkdirAll(ldir, 0o700)
	scanner := serialtest.NewPort(t, ldir, "scanner")
	ecrDev := serialtest.NewPort(t, ldir, "ecr")
	display := serialtest.NewPort(t, ldir, "display")
	screen := watchScreen(t, display.Master())
	r.res.screenRT = <-screen.rt
	r.res.gw = gw
	reg := &ecrtest.Register{Conn: ecrDev.Master(), Timeout: 3 * time.Second}
	metricsAddr := freePort(t)
	cfg := writeConfig(t, ldir, fmt.Sprintf(`
[terminal]
id = "BENCH"
result_time = "1s"
require_clock_sync = false
[gateway]
url = %q
mch_id = "10000576"
job_no = "cashier"
key_file = "KEYFILE"
timeout = "5s"
poll_interval = "100ms"
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
level = %q
`, srv.URL, metricsAddr, benchLogLevel()), 0o600)
	proc := exec.Command(benchBinary(), "run", "--config", cfg)
	logs := benchLogSink(t, proc, filepath.Join(ldir, "scanpay.log"))
	if err := startWithSlack(t, proc, slack); err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	r.stop = func() {
		once.Do(func() {
			proc.Process.Signal(unix.SIGTERM)
			proc.Wait()
			logs.close()
			screen.stop()
			srv.Close()
		})
	}
	screen.wait(t, 0, "Welcome")
	time.Sleep(300 * time.Millisecond) // the serial links in raw mode
	pid := proc.Process.Pid
	r.pid = pid
	r.sale = func(i int) (time.Duration, time.Duration, time.Duration) {
		from := screen.mark()
		req := ecr.Request{POS: "01", Amount: int64(100 + i%40*100), Mode: '1', Type: ecr.TypePurchase, Currency: "124", Private: fmt.Sprintf("B%09d", i)}
		if err := reg.Send(req); err != nil {
			t.Fatalf("sale %d: %v\n%s", i, err, logs.tail())
		}
		screen.wait(t, from, "Show payment code")
		from = screen.mark()
		t0 := time.Now()
		scanner.Master().Write([]byte(benchCode(i) + "\r"))
		shown := screen.wait(t, from, "Approved")
		if r, err := reg.Receive(10*time.Second, false); err != nil || r.Status != ecr.StatusApproved {
			t.Fatalf("sale %d: %+v %v\n%s", i, r, err, logs.tail())
		}
		created, seen, replied := gw.times()
		return created.Sub(t0), seen.Sub(t0), shown.Sub(replied)
	}
	for ; r.next < 20; r.next++ {
		r.sale(r.next) // warm up
	}
	r.rssPhase = func(rssSales int) { r.memoryPhase(t, rssSales, metricsAddr) }
	return r
}

// goHeap is what the daemon's metrics say of its Go heap so far.
type goHeap struct{ allocBytes, mallocs, gcs float64 }

// parseGoHeap reads goHeap from a Prometheus text exposition.
func parseGoHeap(r io.Reader) goHeap {
	var h goHeap
	b, _ := io.ReadAll(r)
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) != 2 {
			continue
		}
		v, err := strconv.ParseFloat(f[1], 64)
		if err != nil {
			continue
		}
		switch f[0] {
		case "go_memstats_alloc_bytes_total":
			h.allocBytes = v
		case "go_memstats_mallocs_total":
			h.mallocs = v
		case "go_gc_duration_seconds_count":
			h.gcs = v
		}
	}
	return h
}

// memoryPhase runs the lane's sales up to rssSales in all, reading its
// RSS every 1000 and its metrics as Prometheus would.
func (r *benchRunner) memoryPhase(t *testing.T, rssSales int, metricsAddr string) {
	res, pid, done := &r.res, r.pid, r.next
	sale := func(i int) { r.sale(i) }
	// Prometheus scrapes a lane every 15 s or so, asking for gzip as Go's
	// client does: the memory rows count what a scrape costs too.
	// Each scrape also reads what the Go heap has allocated and how many
	// collections ran: exact counts, where the timings are noisy.
	var first, last goHeap
	scrape := func() goHeap {
		var h goHeap
		if resp, err := http.Get("http://" + metricsAddr + "/metrics"); err == nil {
			h = parseGoHeap(resp.Body)
			resp.Body.Close()
		}
		return h
	}
	first = scrape()
	start := done
	res.rss = append(res.rss, readProc(pid))
	for done < rssSales {
		sale(done)
		done++
		if done%100 == 0 {
			last = scrape()
		}
		if done%1000 == 0 {
			res.rss = append(res.rss, readProc(pid))
		}
	}
	if n := float64(done - start); n > 0 && last.gcs > 0 {
		res.heap = fmt.Sprintf("%.1f KiB and %.0f objects allocated per sale, a collection every %.1f sales (a scrape every 100 sales included)",
			(last.allocBytes-first.allocBytes)/1024/n, (last.mallocs-first.mallocs)/n, n/(last.gcs-first.gcs))
	}
	if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid)); err == nil {
		var parts []string
		for _, line := range strings.Split(string(b), "\n") {
			for _, k := range []string{"RssAnon:", "RssFile:", "Threads:"} {
				if strings.HasPrefix(line, k) {
					parts = append(parts, strings.Join(strings.Fields(line), " "))
				}
			}
		}
		res.memory = strings.Join(parts, ", ")
	}
	if os.Getenv("SCANPAY_BENCH_SMAPS") != "" {
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/smaps", pid))
		var name, rng string
		for _, line := range strings.Split(string(b), "\n") {
			f := strings.Fields(line)
			if len(f) >= 5 && strings.Contains(f[0], "-") {
				rng, name = f[0], ""
				if len(f) >= 6 {
					name = f[5]
				}
			}
			if len(f) == 3 && f[0] == "Rss:" {
				if kb, _ := strconv.Atoi(f[1]); kb >= 256 {
					fmt.Printf("smaps: %6d kB %s %s\n", kb, rng, name)
				}
			}
		}
	}
	// The Go heap's share, from the daemon's own metrics.
	if resp, err := http.Get("http://" + metricsAddr + "/metrics"); err == nil {
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		for _, line := range strings.Split(string(b), "\n") {
			for _, k := range []string{"go_memstats_heap_inuse_bytes ", "go_memstats_stack_inuse_bytes ", "go_memstats_sys_bytes "} {
				if strings.HasPrefix(line, k) {
					v, _ := strconv.ParseFloat(strings.Fields(line)[1], 64)
					res.memory += fmt.Sprintf(", %s%.1f MiB", strings.TrimPrefix(strings.TrimSuffix(k, "_bytes "), "go_memstats_"), v/(1<<20))
				}
			}
		}
	}
	r.next = done
}

// benchFloor starts the floor program on the same kind of ptys and warms
// it up.
func benchFloor(t *testing.T, dir string, slack time.Duration) *benchRunner {
	r := &benchRunner{res: benchResult{name: "floor"}}
	gw := &benchGateway{sim: iotpaysim.New(iotpaysim.Options{MchID: "10000576", Key: benchKey})}
	srv := newWireServer(gw)
	fdir := filepath.Join(dir, "floor"+slackTag(slack))
	os.MkdirAll(fdir, 0o700)
	scanner := serialtest.NewPort(t, fdir, "scanner")
	display := serialtest.NewPort(t, fdir, "display")
	screen := watchScreen(t, display.Master())
	r.res.screenRT = <-screen.rt
	r.res.gw = gw
	self, _ := os.Executable()
	proc := exec.Command(self, "-test.run=^$")
	proc.Env = append(os.Environ(), "SCANPAY_BENCH_FLOOR=1", "FLOOR_SCANNER="+scanner.Link, "FLOOR_DISPLAY="+display.Link, "FLOOR_GATEWAY="+srv.URL)
	var logs bytes.Buffer
	proc.Stderr, proc.Stdout = &logs, &logs
	if err := startWithSlack(t, proc, slack); err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	r.stop = func() {
		once.Do(func() {
			proc.Process.Kill()
			proc.Wait()
			screen.stop()
			srv.Close()
		})
	}
	screen.wait(t, 0, "READY")
	r.pid = proc.Process.Pid
	r.sale = func(i int) (time.Duration, time.Duration, time.Duration) {
		from := screen.mark()
		t0 := time.Now()
		scanner.Master().Write([]byte(benchCode(i) + "\r"))
		shown := screen.wait(t, from, "Approved")
		created, seen, replied := gw.times()
		return created.Sub(t0), seen.Sub(t0), shown.Sub(replied)
	}
	for ; r.next < 20; r.next++ {
		r.sale(r.next)
	}
	return r
}

// floorMain is the floor program: read a code from the scanner pty, send
// the same signed create_order with net/http, write the answer to the
// display pty. Nothing else: no journal, no state machine.
func floorMain() {
	sc, err := serial.OpenPort(serial.PortConfig{Path: os.Getenv("FLOOR_SCANNER"), Baud: 9600, DataBits: 8, Parity: "none"})
	if err != nil {
		panic(err)
	}
	disp, err := serial.OpenTTY(serial.PortConfig{Path: os.Getenv("FLOOR_DISPLAY"), Baud: 9600, DataBits: 8, Parity: "none"})
	if err != nil {
		panic(err)
	}
	disp.Write([]byte("READY"))
	client := &http.Client{}
	gateway := os.Getenv("FLOOR_GATEWAY") + "/v1/create_order"
	in := bufio.NewReader(sc)
	for n := 1; ; n++ {
		line, err := in.ReadString('\r')
		if err != nil {
			return
		}
		code := strings.TrimSpace(line)
		fields := map[string]string{"mchId": "10000576", "mchOrderNo": fmt.Sprintf("FLOOR-%08d", n), "jobNo": "cashier", "currency": "CAD",
			"channelId": "WX_MICROPAY", "amount": "100", "device": "scanpay", "deviceId": "BENCH", "notifyUrl": "https://localhost/unused",
			"subject": "scanpay", "body": "In-store purchase", "codeType": "barcode", "identityCode": code, "clientIp": "127.0.0.1"}
		form, _ := iotpay.EncodeParams(fields, map[string]bool{"amount": true}, benchKey)
		resp, err := client.Post(gateway, "application/x-www-form-urlencoded", strings.NewReader(form))
		if err != nil {
			continue
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		disp.Write([]byte("\x1f\x24\x01\x01Approved      $1.00"))
	}
}

// benchReady measures start → READY=1 with a journal of n orders, warm and
// with the page cache dropped.
func benchReady(t *testing.T, dir string, n int) (warm, cold time.Duration) {
	rdir := filepath.Join(dir, "ready")
	os.MkdirAll(rdir, 0o700)
	jpath := filepath.Join(rdir, "journal.db")
	if err := fillJournal(jpath, n); err != nil {
		t.Fatalf("fill journal: %v", err)
	}
	os.WriteFile(filepath.Join(rdir, "scanner"), nil, 0o600)
	cfg := writeConfig(t, rdir, `
[terminal]
id = "BENCH"
require_clock_sync = false
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
[log]
level = "warn"
`, 0o600)
	measure := func(dropCache bool) time.Duration {
		sock := filepath.Join(rdir, "notify.sock")
		os.Remove(sock)
		conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		if dropCache {
			dropPageCache(t, binary, jpath, jpath+"-wal", jpath+"-shm")
		}
		proc := exec.Command(binary, "run", "--config", cfg)
		proc.Env = append(os.Environ(), "NOTIFY_SOCKET="+sock)
		start := time.Now()
		if err := startWithSlack(t, proc, unitTimerSlack(t)); err != nil {
			t.Fatal(err)
		}
		defer func() { proc.Process.Signal(unix.SIGTERM); proc.Wait() }()
		buf := make([]byte, 4096)
		conn.SetReadDeadline(time.Now().Add(60 * time.Second))
		for {
			k, err := conn.Read(buf)
			if err != nil {
				t.Fatalf("no READY: %v", err)
			}
			if strings.Contains(string(buf[:k]), "READY=1") {
				return time.Since(start)
			}
		}
	}
	measure(false) // the first start may upgrade or check the journal
	warm = measure(false)
	cold = measure(true)
	return warm, cold
}

// dropPageCache evicts files from the page cache (all of it, as root, when
// the kernel lets us; else the named files).
func dropPageCache(t *testing.T, files ...string) {
	unix.Sync()
	if os.WriteFile("/proc/sys/vm/drop_caches", []byte("3"), 0) == nil {
		return
	}
	for _, f := range files {
		fd, err := unix.Open(f, unix.O_RDONLY, 0)
		if err != nil {
			continue
		}
		unix.Fadvise(fd, 0, 0, unix.FADV_DONTNEED)
		unix.Close(fd)
	}
}

// fillJournal writes a journal of n settled orders at path. It is built on
// tmpfs (fsync is free there) and copied, since a fixture of 100 000 orders
// committed one by one to disk would take many minutes.
func fillJournal(path string, n int) error {
	tmp, err := os.MkdirTemp("/dev/shm", "bench-journal-")
	if err != nil {
		tmp, err = os.MkdirTemp("", "bench-journal-")
		if err != nil {
			return err
		}
	}
	defer os.RemoveAll(tmp)
	src := filepath.Join(tmp, "journal.db")
	j, err := journal.Open(src, journal.Options{})
	if err != nil {
		return err
	}
	ctx := context.Background()
	for i := 0; i < n; i++ {
		o, err := j.AddOrder(ctx, journal.NewOrder{TerminalID: "BENCH", Amount: int64(100 + i%5000), Currency: "CAD", Channel: "WX_MICROPAY",
			CodeMasked: "13************0000", CodeHash: fmt.Sprintf("%064x", i), Source: "ecr", ECRRef: fmt.Sprintf("B%09d", i), POSNumber: "01", ECRType: "0"},
			func(c uint64) string { return fmt.Sprintf("BENCH-%08d-AAAAA", c) })
		if err != nil {
			j.Close()
			return err
		}
		if _, err := j.Transition(ctx, o.MchOrderNo, o.State, journal.StatePaid, journal.Update{PayOrderID: fmt.Sprintf("AM%026d", i), Status: 2}); err != nil {
			j.Close()
			return err
		}
	}
	if err := j.Close(); err != nil {
		return err
	}
	data, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	return os.WriteFile(path, data, 0o600)
}
