package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/scanpay/scanpay/config"
)

// fakeClock fires its timers when the test advances it.
type fakeClock struct {
	mu     sync.Mutex
	now    time.Time
	timers []*fakeTimer
}

type fakeTimer struct {
	at      time.Time
	f       func()
	stopped bool
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) AfterFunc(d time.Duration, f func()) func() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := &fakeTimer{at: c.now.Add(d), f: f}
	c.timers = append(c.timers, t)
	return func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		was := !t.stopped
		t.stopped = true
		return was
	}
}

func (c *fakeClock) advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	var due []*fakeTimer
	kept := c.timers[:0]
	for _, t := range c.timers {
		switch {
		case t.stopped:
		case !t.at.After(c.now):
			t.stopped = true
			due = append(due, t)
		default:
			kept = append(kept, t)
		}
	}
	c.timers = kept
	c.mu.Unlock()
	for _, t := range due {
		t.f()
	}
}

// logLines decodes JSON log lines.
func logLines(t *testing.T, b string) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, l := range strings.Split(strings.TrimSpace(b), "\n") {
		if l == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("not JSON: %q", l)
		}
		out = append(out, m)
	}
	return out
}

func floodLogger(clock floodClock) (*zap.Logger, *syncWriter, *bytes.Buffer) {
	var buf bytes.Buffer
	w := &syncWriter{w: &buf}
	enc := zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig())
	return zap.New(newFloodCore(zapcore.NewCore(enc, zapcore.AddSync(w), zapcore.DebugLevel), floodBurst, floodInterval, clock)), w, &buf
}

func (w *syncWriter) string(b *bytes.Buffer) string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return b.String()
}

func TestFloodSummarised(t *testing.T) {
	clock := &fakeClock{now: time.Date(2026, 11, 29, 10, 0, 0, 0, time.UTC)}
	log, w, buf := floodLogger(clock)
	ecrLog, scanLog := log.Named("ecr"), log.Named("scanner")
	for range 2486 {
		ecrLog.Info("ECR frame refused", zap.Error(errors.New("bad LRC")))
	}
	for range 3 {
		scanLog.Info("scanner line dropped", zap.String("reason", "control"))
	}
	// Money is never held back: Error and above, and lines about an
	// order or a refund, on the line or on the logger.
	for range 20 {
		log.Named("lane").Error("journal failure")
		log.Named("lane").Info("order sent", zap.String("mchOrderNo", "L-1"))
		log.Named("lane").With(zap.String("mchRefundNo", "R-1")).Info("refund finished")
	}
	lines := logLines(t, w.string(buf))
	count := func(msg string) (n int) {
		for _, l := range lines {
			if l["msg"] == msg {
				n++
			}
		}
		return n
	}
	if n := count("ECR frame refused"); n != floodBurst {
		t.Fatalf("%d lines of a flood passed, want %d", n, floodBurst)
	}
	if count("scanner line dropped") != 3 || count("journal failure") != 20 || count("order sent") != 20 || count("refund finished") != 20 {
		t.Fatalf("other sources or money lines were limited:\n%s", w.string(buf))
	}
	// The summary comes when the interval ends.
	clock.advance(floodInterval)
	lines = logLines(t, w.string(buf))
	last := lines[len(lines)-1]
	if last["msg"] != "ECR frame refused … and 2481 more in the last 10s" || last["logger"] != "ecr" || last["suppressed"] != float64(2481) {
		t.Fatalf("summary %v", last)
	}
	// The next interval passes a burst again; Sync writes what is pending.
	for range 7 {
		ecrLog.Info("ECR frame refused")
	}
	clock.advance(time.Second)
	log.Sync()
	lines = logLines(t, w.string(buf))
	if n := count("ECR frame refused"); n != 2*floodBurst {
		t.Fatalf("%d lines after two bursts", n)
	}
	if last := lines[len(lines)-1]; last["msg"] != "ECR frame refused … and 2 more in the last 1s" {
		t.Fatalf("summary at Sync %v", last)
	}
}

// A line arriving after its window ended opens a new one even when the
// window's timer has not run yet.
func TestFloodWindowEndsWithoutTimer(t *testing.T) {
	clock := &fakeClock{now: time.Unix(0, 0)}
	log, w, buf := floodLogger(clock)
	for range floodBurst + 3 {
		log.Info("key refused")
	}
	clock.mu.Lock()
	clock.now = clock.now.Add(floodInterval) // time passes, no timer fires
	clock.mu.Unlock()
	log.Info("key refused")
	lines := logLines(t, w.string(buf))
	if len(lines) != floodBurst+2 || lines[floodBurst]["msg"] != "key refused … and 3 more in the last 10s" || lines[floodBurst+1]["msg"] != "key refused" {
		t.Fatalf("%v", lines)
	}
	log.Sync()
}

func TestNewLoggerLevelAndFormat(t *testing.T) {
	var buf bytes.Buffer
	log := newLogger(config.Log{Level: "warn", Format: "console"}, &buf)
	log.Info("hidden")
	log.Warn("shown")
	log.Sync()
	if s := buf.String(); strings.Contains(s, "hidden") || !strings.Contains(s, "warn\tshown") {
		t.Fatalf("%q", s)
	}
}
