package display

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
	"go.uber.org/zap/zaptest"
	"golang.org/x/sys/unix"

	"github.com/scanpay/scanpay/device"
	"github.com/scanpay/scanpay/device/devicetest"
	"github.com/scanpay/scanpay/device/serial"
	"github.com/scanpay/scanpay/device/serial/serialtest"
	"github.com/scanpay/scanpay/payment"
)

var update = flag.Bool("update", false, "rewrite the golden files")

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// screens is one example of every screen the lane can show.
var screens = []payment.Screen{
	{Kind: payment.ScreenIdle},
	{Kind: payment.ScreenTyping, Amount: 2865},
	{Kind: payment.ScreenAwaitingCode, Amount: 2865},
	{Kind: payment.ScreenProcessing, Amount: 2865, Wallet: "WeChat Pay"},
	{Kind: payment.ScreenConfirmOnPhone, Amount: 2865, Wallet: "Alipay"},
	{Kind: payment.ScreenApproved, Amount: 2865, Wallet: "WeChat Pay"},
	{Kind: payment.ScreenDeclined, Amount: 1051, Reason: "insufficient balance"},
	{Kind: payment.ScreenNotConfirmed, Amount: 1054},
	{Kind: payment.ScreenUnsupported},
	{Kind: payment.ScreenCodeUsed},
	{Kind: payment.ScreenEnterAmountFirst},
	{Kind: payment.ScreenOffline, Amount: 2000, Reason: "gateway unreachable"},
	{Kind: payment.ScreenRefundDone, Amount: 500},
	{Kind: payment.ScreenRefundFailed, Amount: 500, Reason: "refund exceeds the refundable amount"},
	{Kind: payment.ScreenCancelled, Amount: 300, Reason: "timed out"},
	{Kind: payment.ScreenRecovering, Amount: 1052},
	{Kind: payment.ScreenOutOfService},
	{Kind: payment.ScreenWaitingClock},
	{Kind: payment.ScreenOverLimit, Amount: 100000},
}

func TestLayoutFitsAndIsASCII(t *testing.T) {
	for _, w := range []int{16, 20, 40} {
		l := Layout{Width: w}
		for _, s := range screens {
			lines := l.Render(s)
			for _, line := range lines {
				if len(line) != w {
					t.Errorf("width %d, %s: %q is %d long", w, s.Kind, line, len(line))
				}
				if ASCII(line) != line {
					t.Errorf("%s: non-ASCII %q", s.Kind, line)
				}
			}
			if s.Amount > 0 && s.Kind != payment.ScreenOffline && w >= 20 && !strings.Contains(lines[0]+lines[1], Money(s.Amount)) {
				t.Errorf("width %d, %s: amount missing in %q", w, s.Kind, lines)
			}
		}
	}
}

func TestLayoutTexts(t *testing.T) {
	l := Layout{Width: 20}
	tests := []struct {
		s    payment.Screen
		want Lines
	}{
		{payment.Screen{Kind: payment.ScreenApproved, Amount: 2865, Wallet: "WeChat Pay"}, Lines{"Approved      $28.65", "WeChat Pay Thank you"}},
		{payment.Screen{Kind: payment.ScreenDeclined, Amount: 1051, Reason: "余额不足"}, Lines{"Declined      $10.51", "Not charged         "}},
		{payment.Screen{Kind: payment.ScreenDeclined, Amount: 1051, Reason: "carte refusée"}, Lines{"Declined      $10.51", "Carte refusee       "}},
		{payment.Screen{Kind: payment.ScreenNotConfirmed, Amount: 1054}, Lines{"Not confirmed $10.54", "Do not pay again    "}},
		{payment.Screen{Kind: payment.ScreenTyping, Amount: 99999999}, Lines{"Amount    $999999.99", "                    "}},
		{payment.Screen{Kind: payment.ScreenWaitingClock}, Lines{"Waiting for clock   ", "No sales yet        "}},
		{payment.Screen{Kind: payment.ScreenOverLimit, Amount: 100000}, Lines{"Over the limit      ", "Max         $1000.00"}},
	}
	for _, tc := range tests {
		got := l.Render(tc.s)
		got[0] = strings.TrimRight(got[0], " ")
		want := tc.want
		want[0] = strings.TrimRight(want[0], " ")
		if got != want {
			t.Errorf("%s: %q, want %q", tc.s.Kind, got, want)
		}
	}
	if Money(5) != "$0.05" || Money(100) != "$1.00" || Money(-250) != "-$2.50" {
		t.Error("money formatting")
	}
	if got := ASCII("é\x1b[2J\u00a0中"); got != "e[2J??" {
		t.Errorf("ASCII = %q", got)
	}
}

func startPole(t *testing.T, port *serialtest.Port, proto Protocol, obs device.Observer) (*Pole, func()) {
	pole := NewPole(Config{
		Protocol: proto,
		Open:     SerialOpener(serial.PortConfig{Path: port.Link, Baud: 9600, DataBits: 8, Parity: "none"}),
		Layout:   Layout{Width: 20},
		Backoff:  device.Backoff{Min: 5 * time.Millisecond, Max: 20 * time.Millisecond},
		Logger:   zaptest.NewLogger(t),
		Observer: obs,
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- pole.Run(ctx) }()
	return pole, func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}
}

func TestGoldenStreams(t *testing.T) {
	for _, d := range []struct {
		name  string
		proto Protocol
	}{{"escpos", EscPos{}}, {"cd5220", CD5220{}}} {
		t.Run(d.name, func(t *testing.T) {
			var golden bytes.Buffer
			var all []byte
			for _, s := range screens {
				// A fresh session per screen: init, then both lines.
				port := serialtest.NewPort(t, t.TempDir(), "display")
				pole, stop := startPole(t, port, d.proto, nil)
				pole.Show(s)
				lines := Layout{Width: 20}.Render(s)
				n := len(d.proto.Init()) + len(d.proto.Line(0, lines[0])) + len(d.proto.Line(1, lines[1]))
				got := port.ReadN(n)
				port.Quiet()
				stop()
				port.Unplug()
				all = append(all, got...)
				fmt.Fprintf(&golden, "%s %q %q\n%s\n", s.Kind, lines[0], lines[1], hex.EncodeToString(got))
			}
			path := filepath.Join("testdata", d.name+".golden")
			if *update {
				os.WriteFile(path, golden.Bytes(), 0o644)
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run go test ./display -update to create it)", err)
			}
			if !bytes.Equal(want, golden.Bytes()) {
				t.Fatalf("stream differs from %s:\n%s", path, golden.String())
			}
			for _, b := range all {
				if b >= 0x80 {
					t.Fatalf("non-ASCII byte %#x on the wire", b)
				}
			}
			if d.name == "cd5220" {
				checkCD5220StringMode(t, all)
			}
		})
	}
}

// checkCD5220StringMode fails when a command byte is sent while the display
// is still in the string mode that ESC Q A/B starts and CR ends.
func checkCD5220StringMode(t *testing.T, stream []byte) {
	inString := false
	for i := 0; i < len(stream); i++ {
		b := stream[i]
		if inString {
			switch {
			case b == 0x0d:
				inString = false
			case b < 0x20 || b == 0x7f:
				t.Fatalf("control byte %#x at %d while in string mode", b, i)
			}
			continue
		}
		if b == 0x1b && i+2 < len(stream) && stream[i+1] == 'Q' && (stream[i+2] == 'A' || stream[i+2] == 'B') {
			inString = true
			i += 2
		}
	}
	if inString {
		t.Fatal("stream ends in string mode")
	}
}

func TestConsoleGolden(t *testing.T) {
	var out bytes.Buffer
	c := &Console{Layout: Layout{Width: 20}, Out: &out}
	for _, s := range screens {
		c.Show(s)
	}
	c.Show(screens[len(screens)-1]) // unchanged: not redrawn
	path := filepath.Join("testdata", "console.golden")
	if *update {
		os.WriteFile(path, out.Bytes(), 0o644)
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(want, out.Bytes()) {
		t.Fatalf("console output differs from %s:\n%s", path, out.String())
	}
}

func TestOnlyChangedLinesWritten(t *testing.T) {
	port := serialtest.NewPort(t, t.TempDir(), "display")
	pole, stop := startPole(t, port, EscPos{}, nil)
	defer stop()
	l := Layout{Width: 20}
	a := payment.Screen{Kind: payment.ScreenAwaitingCode, Amount: 2865}
	b := payment.Screen{Kind: payment.ScreenProcessing, Amount: 2865}
	pole.Show(a)
	la := l.Render(a)
	port.ReadN(len(EscPos{}.Init()) + 2*len(EscPos{}.Line(0, la[0])))
	pole.Show(b)
	lb := l.Render(b)
	if la[0] != lb[0] {
		t.Fatal("test screens should share line 1")
	}
	want := EscPos{}.Line(1, lb[1])
	if got := port.ReadN(len(want)); !bytes.Equal(got, want) {
		t.Fatalf("wrote %q, want only line 2 %q", got, want)
	}
	port.Quiet()
	pole.Show(b) // nothing changed: nothing written
	port.Quiet()
}

func TestUnplugReplugRedraws(t *testing.T) {
	port := serialtest.NewPort(t, t.TempDir(), "display")
	obs := &devicetest.Devices{}
	pole, stop := startPole(t, port, EscPos{}, obs)
	defer stop()
	s := payment.Screen{Kind: payment.ScreenApproved, Amount: 2865, Wallet: "WeChat Pay"}
	pole.Show(s)
	lines := Layout{Width: 20}.Render(s)
	full := len(EscPos{}.Init()) + 2*len(EscPos{}.Line(0, lines[0]))
	port.ReadN(full)
	port.Unplug()
	devicetest.WaitFor(t, "unplug noticed", func() bool { return obs.Down() && len(obs.Changes()) >= 2 })
	port.Plug()
	// Back: the display is re-initialised and the current screen redrawn
	// without a new Show.
	got := port.ReadN(full)
	if !bytes.HasPrefix(got, EscPos{}.Init()) || !bytes.Contains(got, []byte(lines[0])) || !bytes.Contains(got, []byte(lines[1])) {
		t.Fatalf("after replug: %q", got)
	}
}

// stuckDevice never takes data: writes wait for the deadline.
type stuckDevice struct {
	mu       sync.Mutex
	deadline time.Time
	closed   chan struct{}
	once     sync.Once
}

func (d *stuckDevice) Write(p []byte) (int, error) {
	d.mu.Lock()
	dl := d.deadline
	d.mu.Unlock()
	select {
	case <-time.After(time.Until(dl)):
		return 0, os.ErrDeadlineExceeded
	case <-d.closed:
		return 0, os.ErrClosed
	}
}
func (d *stuckDevice) Read([]byte) (int, error) { <-d.closed; return 0, os.ErrClosed }
func (d *stuckDevice) SetWriteDeadline(t time.Time) error {
	d.mu.Lock()
	d.deadline = t
	d.mu.Unlock()
	return nil
}
func (d *stuckDevice) Close() error { d.once.Do(func() { close(d.closed) }); return nil }

func TestStalledDisplayNeverBlocksCaller(t *testing.T) {
	obs := &devicetest.Devices{}
	opens := 0
	var mu sync.Mutex
	pole := NewPole(Config{Protocol: EscPos{}, Layout: Layout{Width: 20}, WriteTimeout: 20 * time.Millisecond,
		Backoff: device.Backoff{Min: 5 * time.Millisecond, Max: 10 * time.Millisecond}, Observer: obs, Logger: zaptest.NewLogger(t),
		Open: func() (Device, error) {
			mu.Lock()
			opens++
			mu.Unlock()
			return &stuckDevice{closed: make(chan struct{})}, nil
		}})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- pole.Run(ctx) }()
	for i := 0; i < 10000; i++ {
		pole.Show(payment.Screen{Kind: payment.ScreenTyping, Amount: int64(i)})
	}
	devicetest.WaitFor(t, "reopen attempts", func() bool { mu.Lock(); defer mu.Unlock(); return opens >= 3 })
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	// The device never came up, so it was reported down once.
	if c := obs.Changes(); len(c) != 1 || c[0] {
		t.Fatalf("state changes %v: want one 'down'", c)
	}
}

// fakeLine records GPIO values with the fake time they were set at.
type fakeLine struct {
	now    *time.Duration
	events []string
	fail   error
}

func (f *fakeLine) SetValue(v int) error {
	f.events = append(f.events, fmt.Sprintf("%v=%d", *f.now, v))
	if f.fail != nil && v == 1 {
		return f.fail
	}
	return nil
}
func (f *fakeLine) Close() error { return nil }

func TestGPIOPatterns(t *testing.T) {
	var now time.Duration
	sleep := func(d time.Duration) { now += d }
	tests := map[payment.Beep]string{
		payment.BeepAccepted: "0s=1 30ms=0",
		payment.BeepApproved: "0s=1 150ms=0",
		payment.BeepDeclined: "0s=1 100ms=0 200ms=1 300ms=0 400ms=1 500ms=0",
	}
	for beep, want := range tests {
		now = 0
		line := &fakeLine{now: &now}
		b := &Beeper{dev: gpioSwitch{line}, sleep: sleep}
		if err := b.Beep(beep); err != nil {
			t.Fatal(err)
		}
		if got := strings.Join(line.events, " "); got != want {
			t.Errorf("%s: %s, want %s", beep, got, want)
		}
	}
	// A failing line is reported and left off.
	now = 0
	line := &fakeLine{now: &now, fail: errors.New("line busy")}
	b := &Beeper{dev: gpioSwitch{line}, sleep: sleep}
	if err := b.Beep(payment.BeepApproved); err == nil {
		t.Fatal("failure not reported")
	}
	if last := line.events[len(line.events)-1]; !strings.HasSuffix(last, "=0") {
		t.Fatalf("line left on: %v", line.events)
	}
}

type fakeEvents struct {
	now    *time.Duration
	events []string
}

func (f *fakeEvents) WriteOne(ev *evdevEvent) error {
	f.events = append(f.events, fmt.Sprintf("%v:%d/%d/%d", *f.now, ev.Type, ev.Code, ev.Value))
	return nil
}
func (f *fakeEvents) Close() error { return nil }

func TestTonePattern(t *testing.T) {
	var now time.Duration
	w := &fakeEvents{now: &now}
	b := &Beeper{dev: toneSwitch{w}, sleep: func(d time.Duration) { now += d }}
	if err := b.Beep(payment.BeepApproved); err != nil {
		t.Fatal(err)
	}
	want := "0s:18/2/2000 0s:0/0/0 150ms:18/2/0 150ms:0/0/0"
	if got := strings.Join(w.events, " "); got != want {
		t.Fatalf("events %s, want %s", got, want)
	}
}

// Screens shown faster than the port drains them: direct writes fill the
// port, one is cut short and Run finishes it. The device must receive
// whole commands only, in order (never an older screen after a newer
// one), and end on the newest screen.
func TestFullPortKeepsTheStreamWhole(t *testing.T) {
	port := serialtest.NewPort(t, t.TempDir(), "display")
	pole, stop := startPole(t, port, EscPos{}, nil)
	defer stop()
	l := Layout{Width: 20}
	first := payment.Screen{Kind: payment.ScreenTyping, Amount: 1}
	pole.Show(first)
	port.ReadN(len(EscPos{}.Init()) + 2*len(EscPos{}.Line(0, l.Render(first)[0])))

	const n = 4000 // about 100 KB of line commands: more than a pty holds
	var last payment.Screen
	for i := 2; i <= n; i++ {
		last = payment.Screen{Kind: payment.ScreenTyping, Amount: int64(i)}
		pole.Show(last)
	}
	var got []byte
	m := port.Master()
	buf := make([]byte, 4096)
	for {
		m.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
		k, err := m.Read(buf)
		got = append(got, buf[:k]...)
		if err != nil {
			break
		}
	}
	want := l.Render(last)
	// The row that carries the amount, and each amount's text on it.
	row := 0
	if l.Render(first)[0] == want[0] {
		row = 1
	}
	amounts := map[string]int64{}
	for i := int64(1); i <= n; i++ {
		amounts[l.Render(payment.Screen{Kind: payment.ScreenTyping, Amount: i})[row]] = i
	}
	cmd := len(EscPos{}.Line(0, want[0]))
	if len(got) == 0 || len(got)%cmd != 0 {
		t.Fatalf("%d bytes is not a whole number of %d-byte line commands", len(got), cmd)
	}
	prev := int64(1)
	shown := ""
	for off := 0; off < len(got); off += cmd {
		c := got[off : off+cmd]
		if c[0] != 0x1f || c[1] != 0x24 || c[2] != 1 || int(c[3]) != row+1 {
			t.Fatalf("command at %d is cut, mixed or for the wrong row: %q", off, c)
		}
		shown = string(c[4:])
		amount, ok := amounts[shown]
		if !ok || amount <= prev {
			t.Fatalf("the amount went from %d to %q (%d)", prev, shown, amount)
		}
		prev = amount
	}
	if shown != want[row] {
		t.Fatalf("the display ends on %q, want %q", shown, want[row])
	}
}

// Show writes directly however long ago the driver last wrote: the
// driver's write deadline must not outlive its write.
func TestDirectWriteAfterIdle(t *testing.T) {
	port := serialtest.NewPort(t, t.TempDir(), "display")
	pole := NewPole(Config{
		Protocol:     EscPos{},
		Open:         SerialOpener(serial.PortConfig{Path: port.Link, Baud: 9600, DataBits: 8, Parity: "none"}),
		Layout:       Layout{Width: 20},
		WriteTimeout: 30 * time.Millisecond,
		Backoff:      device.Backoff{Min: 5 * time.Millisecond, Max: 20 * time.Millisecond},
		Logger:       zaptest.NewLogger(t),
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- pole.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	l := Layout{Width: 20}
	a := payment.Screen{Kind: payment.ScreenTyping, Amount: 100}
	pole.Bell() // Run writes (with its deadline) once up
	port.ReadN(len(EscPos{}.Init()) + len(EscPos{}.Bell()))
	time.Sleep(100 * time.Millisecond) // well past Run's write deadline
	pole.mu.Lock()
	pole.latest, pole.have = l.Render(a), true
	pole.mu.Unlock()
	if !pole.drawNow() {
		t.Fatal("a direct write was refused after the driver had been idle")
	}
	want := append(EscPos{}.Line(0, l.Render(a)[0]), EscPos{}.Line(1, l.Render(a)[1])...)
	if got := port.ReadN(len(want)); !bytes.Equal(got, want) {
		t.Fatalf("wrote %q, want %q", got, want)
	}
}

// blockingDevice is a blocking pipe that claims deadlines: an Opener's
// device the lane must not write to itself.
type blockingDevice struct {
	*os.File
	closed chan struct{}
	once   sync.Once
}

func (*blockingDevice) SetWriteDeadline(time.Time) error { return nil }
func (d *blockingDevice) Read([]byte) (int, error)       { <-d.closed; return 0, os.ErrClosed }
func (d *blockingDevice) Close() error                   { d.once.Do(func() { close(d.closed) }); return nil }

// A device whose file blocks is never written from Show's caller: with
// the port full, Show still returns at once.
func TestBlockingDeviceNotWrittenDirectly(t *testing.T) {
	var fds [2]int
	if err := unix.Pipe2(fds[:], unix.O_CLOEXEC); err != nil {
		t.Fatal(err)
	}
	r := os.NewFile(uintptr(fds[0]), "pipe-r")
	w := os.NewFile(uintptr(fds[1]), "pipe-w") // blocking: not in the poller
	defer r.Close()
	pole := NewPole(Config{Protocol: EscPos{}, Layout: Layout{Width: 20}, Logger: zaptest.NewLogger(t),
		Open: func() (Device, error) { return &blockingDevice{File: w, closed: make(chan struct{})}, nil }})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- pole.Run(ctx) }()
	init := make([]byte, len(EscPos{}.Init()))
	if _, err := io.ReadFull(r, init); err != nil {
		t.Fatal(err)
	}
	// Fill the pipe: any further write to it blocks.
	size, err := unix.FcntlInt(w.Fd(), unix.F_GETPIPE_SZ, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(make([]byte, size)); err != nil {
		t.Fatal(err)
	}
	shown := make(chan struct{})
	go func() {
		pole.Show(payment.Screen{Kind: payment.ScreenApproved, Amount: 100})
		close(shown)
	}()
	select {
	case <-shown:
	case <-time.After(10 * time.Second):
		t.Fatal("Show blocked on a full blocking device")
	}
	// Let Run's own (blocked) write finish, then stop it.
	go io.Copy(io.Discard, r)
	cancel()
	<-done
	w.Close()
}
