package scanner

import (
	"context"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"go.uber.org/goleak"
	"go.uber.org/zap/zaptest"

	"github.com/scanpay/scanpay/device"
	"github.com/scanpay/scanpay/device/devicetest"
	"github.com/scanpay/scanpay/device/input"
	"github.com/scanpay/scanpay/device/serial"
	"github.com/scanpay/scanpay/device/serial/serialtest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func frame(t *testing.T, cfg FramerConfig, input string) ([]string, FramerStats) {
	t.Helper()
	f, err := NewFramer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	var lines []string
	for i := 0; i < len(input); i++ {
		if l, ok := f.Feed(input[i]); ok {
			lines = append(lines, l)
		}
	}
	return lines, f.Stats
}

func TestFramer(t *testing.T) {
	tests := []struct {
		name  string
		cfg   FramerConfig
		in    string
		want  []string
		stats FramerStats
	}{
		{"cr", FramerConfig{}, "111\r222\r", []string{"111", "222"}, FramerStats{Lines: 2}},
		{"lf", FramerConfig{}, "111\n222\n", []string{"111", "222"}, FramerStats{Lines: 2}},
		{"crlf", FramerConfig{}, "111\r\n222\r\n", []string{"111", "222"}, FramerStats{Lines: 2}},
		{"mixed endings", FramerConfig{}, "1\r2\n3\r\n4\n\r5\r", []string{"1", "2", "3", "4", "5"}, FramerStats{Lines: 5}},
		{"cr mode ignores lf after cr", FramerConfig{Terminator: "cr"}, "111\r\n222\r", []string{"111", "222"}, FramerStats{Lines: 2}},
		{"crlf mode", FramerConfig{Terminator: "crlf"}, "111\r\n222\r\n", []string{"111", "222"}, FramerStats{Lines: 2}},
		{"lf mode ignores stray cr first", FramerConfig{Terminator: "lf"}, "\r111\n", []string{"111"}, FramerStats{Lines: 1}},
		{"NULs between codes", FramerConfig{}, "\x00\x00111\r\x00\r222\r", []string{"222"}, FramerStats{Lines: 1, Control: 2}},
		{"control byte spoils a line", FramerConfig{}, "12\x1b34\r56\r", []string{"56"}, FramerStats{Lines: 1, Control: 1}},
		{"binary noise", FramerConfig{}, "\xff\xfe\x80\r789\r", []string{"789"}, FramerStats{Lines: 1, Control: 1}},
		{"overlong then resync", FramerConfig{MaxLen: 4}, "123456789\r1234\r", []string{"1234"}, FramerStats{Lines: 1, Overlong: 1}},
		{"duplicate codes both delivered", FramerConfig{}, "42\r42\r", []string{"42", "42"}, FramerStats{Lines: 2}},
		{"no terminator yet", FramerConfig{}, "123", nil, FramerStats{}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			lines, stats := frame(t, tc.cfg, tc.in)
			if strings.Join(lines, ",") != strings.Join(tc.want, ",") || stats != tc.stats {
				t.Fatalf("lines %q stats %+v, want %q %+v", lines, stats, tc.want, tc.stats)
			}
		})
	}
	if _, err := NewFramer(FramerConfig{Terminator: "semicolon"}); err == nil {
		t.Fatal("bad terminator accepted")
	}
	lines, stats := frame(t, FramerConfig{}, strings.Repeat("9", 10240)+"\r5\r")
	if len(lines) != 1 || lines[0] != "5" || stats.Overlong != 1 {
		t.Fatalf("10 kB line: %q %+v", lines, stats)
	}
}

func FuzzFramer(f *testing.F) {
	for _, s := range []string{"111\r222\n", "\x00\x00\r\n", "12\x1b34\r56\r", strings.Repeat("9", 100) + "\r1\r", "\r\n\r\n"} {
		f.Add([]byte(s), "auto")
	}
	f.Add([]byte("1\r\n2\r\n"), "crlf")
	f.Fuzz(func(t *testing.T, data []byte, term string) {
		fr, err := NewFramer(FramerConfig{Terminator: term, MaxLen: 24})
		if err != nil {
			return
		}
		for _, b := range data {
			line, ok := fr.Feed(b)
			if !ok {
				continue
			}
			if line == "" || len(line) > 24 {
				t.Fatalf("bad line %q", line)
			}
			for i := 0; i < len(line); i++ {
				if line[i] < 0x20 || line[i] >= 0x7f {
					t.Fatalf("control byte in %q", line)
				}
			}
		}
	})
}

// upCounter and waitFor are the shared fixtures under local names.
type upCounter = devicetest.Devices

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	devicetest.WaitFor(t, what, cond)
}

// chanSink hands the scanner's codes to the test on a channel.
type chanSink chan Code

func (c chanSink) Scan(ctx context.Context, code Code) error {
	select {
	case c <- code:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func next(t *testing.T, out <-chan Code) string {
	t.Helper()
	select {
	case c := <-out:
		return c.Text
	case <-time.After(5 * time.Second):
		t.Fatal("no code")
	}
	return ""
}

func TestSerialScannerOverPty(t *testing.T) {
	port := serialtest.NewPort(t, t.TempDir(), "scanner")
	obs := &upCounter{}
	var rejects []string
	var rmu sync.Mutex
	s := &SerialScanner{
		Port:     serial.PortConfig{Path: port.Link, Baud: 9600, DataBits: 8, Parity: "none"},
		Backoff:  device.Backoff{Min: 10 * time.Millisecond, Max: 40 * time.Millisecond},
		Logger:   zaptest.NewLogger(t),
		Observer: obs,
		OnReject: func(r string) { rmu.Lock(); rejects = append(rejects, r); rmu.Unlock() },
	}
	ctx, cancel := context.WithCancel(context.Background())
	out := make(chan Code, 10)
	done := make(chan error)
	go func() { done <- s.Run(ctx, chanSink(out)) }()
	waitFor(t, "port open", func() bool { return obs.Ups() == 1 })

	port.WriteSlowly("134567890123456789\r")
	if got := next(t, out); got != "134567890123456789" {
		t.Fatalf("got %q", got)
	}
	port.WriteSlowly("\x00\x00noise\x07\r" + strings.Repeat("7", 10240) + "\r2812345678901234\r\n2812345678901234\r")
	if a, b := next(t, out), next(t, out); a != "2812345678901234" || b != a {
		t.Fatalf("got %q %q", a, b)
	}
	rmu.Lock()
	if strings.Join(rejects, ",") != "control,overlong" {
		t.Fatalf("rejections %v", rejects)
	}
	rmu.Unlock()

	// Unplug: the reader notices and picks the device up again when it
	// returns under the same name. (That it keeps retrying while the device
	// is away is device.TestKeeperReopensAfterLoss.)
	port.Unplug()
	waitFor(t, "unplug noticed", func() bool { return len(obs.Changes()) >= 2 && obs.Down() })
	port.Plug()
	waitFor(t, "reopen", func() bool { return obs.Ups() == 2 })
	port.WriteSlowly("6212345678901234567\n")
	if got := next(t, out); got != "6212345678901234567" {
		t.Fatalf("after replug: %q", got)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	// One log line per state change: up, down, up.
	if c := obs.Changes(); len(c) != 3 {
		t.Fatalf("state changes %v, want up/down/up", c)
	}
}

func TestHIDScannerRetriesMissingDevice(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "event-missing")
	// 100 ms of retries on synctest's clock: dozens of attempts, no waiting.
	synctest.Test(t, func(t *testing.T) {
		obs := &upCounter{}
		s := &HIDScanner{Device: input.DeviceSpec{Path: missing}, Backoff: device.Backoff{Min: time.Millisecond, Max: 5 * time.Millisecond},
			Observer: obs, Logger: zaptest.NewLogger(t)}
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		defer cancel()
		if err := s.Run(ctx, chanSink(make(chan Code))); err != nil {
			t.Fatal(err)
		}
		if c := obs.Changes(); len(c) != 1 || c[0] {
			t.Fatalf("changes %v: a missing device must be reported down once", c)
		}
	})
}
