package main

import (
	"fmt"
	"io"
	"sync"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/scanpay/scanpay/config"
)

// Flood limits: a source repeating one message passes floodBurst lines
// per floodInterval, then one summary line when the interval ends.
const (
	floodBurst    = 5
	floodInterval = 10 * time.Second
	// floodKeys bounds the windows tracked; messages are constant, so a
	// lane has far fewer. Past it, a logger's other messages share one.
	floodKeys = 512
)

// newLogger builds the process's one logger: JSON for journald by default,
// console text for people, with floods of repeated lines summarised (see
// floodCore). Sync writes the summaries still pending.
func newLogger(c config.Log, w io.Writer) *zap.Logger {
	level := zapcore.InfoLevel
	_ = level.UnmarshalText([]byte(c.Level))
	enc := zap.NewProductionEncoderConfig()
	enc.EncodeTime = zapcore.ISO8601TimeEncoder
	var encoder zapcore.Encoder
	if c.Format == "console" {
		encoder = zapcore.NewConsoleEncoder(enc)
	} else {
		encoder = zapcore.NewJSONEncoder(enc)
	}
	core := zapcore.NewCore(encoder, zapcore.Lock(zapcore.AddSync(w)), level)
	return zap.New(newFloodCore(core, floodBurst, floodInterval, realClock{}))
}

// floodCore keeps the log useful when one source repeats itself (register
// garbage, scanner noise, a stuck keypad key): per logger name and
// message, the first burst lines of an interval pass, the rest are
// counted, and when the interval ends one line says "<message> … and N
// more in the last 10s". Without it journald's own rate limit would drop
// lines at random, the ones that matter among them. The metrics keep the
// full counts. Never limited: anything at Error or above (journal
// failures, alerts) and any line about an order or a refund (a field
// mchOrderNo or mchRefundNo, on the line or its logger): money.
type floodCore struct {
	zapcore.Core
	gate   *floodGate
	exempt bool // the logger's fields name an order or a refund
}

// moneyFields mark a line about an order or a refund.
var moneyFields = map[string]bool{"mchOrderNo": true, "mchRefundNo": true}

func newFloodCore(core zapcore.Core, burst int, interval time.Duration, clock floodClock) *floodCore {
	return &floodCore{Core: core, gate: &floodGate{out: core, burst: burst, interval: interval, clock: clock, windows: map[string]*floodWindow{}}}
}

func aboutMoney(fields []zapcore.Field) bool {
	for _, f := range fields {
		if moneyFields[f.Key] {
			return true
		}
	}
	return false
}

func (c *floodCore) With(fields []zapcore.Field) zapcore.Core {
	return &floodCore{Core: c.Core.With(fields), gate: c.gate, exempt: c.exempt || aboutMoney(fields)}
}

func (c *floodCore) Check(ent zapcore.Entry, ce *zapcore.CheckedEntry) *zapcore.CheckedEntry {
	if c.Enabled(ent.Level) {
		return ce.AddCore(ent, c)
	}
	return ce
}

func (c *floodCore) Write(ent zapcore.Entry, fields []zapcore.Field) error {
	if c.exempt || ent.Level >= zapcore.ErrorLevel || aboutMoney(fields) || c.gate.pass(ent) {
		return c.Core.Write(ent, fields)
	}
	return nil
}

// Sync writes the pending summaries, then syncs the output.
func (c *floodCore) Sync() error {
	c.gate.flush()
	return c.Core.Sync()
}

// floodClock is the time source; tests replace it.
type floodClock interface {
	Now() time.Time
	AfterFunc(d time.Duration, f func()) (stop func() bool)
}

type realClock struct{}

func (realClock) Now() time.Time { return time.Now() }
func (realClock) AfterFunc(d time.Duration, f func()) func() bool {
	return time.AfterFunc(d, f).Stop
}

// floodGate is the state every child of one floodCore shares.
type floodGate struct {
	out      zapcore.Core // summaries go here, without a child's fields
	burst    int
	interval time.Duration
	clock    floodClock

	mu      sync.Mutex
	windows map[string]*floodWindow
}

type floodWindow struct {
	start   time.Time
	passed  int
	dropped int
	first   zapcore.Entry // the first line held back, for the summary
	stop    func() bool
}

// pass reports whether ent may be written, counting it when not.
func (g *floodGate) pass(ent zapcore.Entry) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	key := ent.LoggerName + "\x00" + ent.Message
	w := g.windows[key]
	if w == nil && len(g.windows) >= floodKeys {
		key = ent.LoggerName + "\x00(other messages)"
		w = g.windows[key]
		ent.Message = "(other messages)"
	}
	now := g.clock.Now()
	if w != nil && now.Sub(w.start) >= g.interval {
		g.closeLocked(key, w) // its timer may not have run yet
		w = nil
	}
	if w == nil {
		w = &floodWindow{start: now}
		g.windows[key] = w
	}
	if w.passed < g.burst {
		w.passed++
		return true
	}
	w.dropped++
	if w.dropped == 1 {
		w.first = ent
		w.stop = g.clock.AfterFunc(w.start.Add(g.interval).Sub(now), func() { g.expire(key, w) })
	} else if ent.Level > w.first.Level {
		w.first.Level = ent.Level
	}
	return false
}

func (g *floodGate) expire(key string, w *floodWindow) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.windows[key] == w {
		g.closeLocked(key, w)
	}
}

// closeLocked ends a window, writing its summary when it held lines back.
func (g *floodGate) closeLocked(key string, w *floodWindow) {
	delete(g.windows, key)
	if w.dropped == 0 {
		return
	}
	if w.stop != nil {
		w.stop()
	}
	ent := w.first
	ent.Time = g.clock.Now()
	span := min(ent.Time.Sub(w.start), g.interval).Round(time.Millisecond)
	if span >= time.Second {
		span = span.Round(time.Second)
	}
	ent.Message = fmt.Sprintf("%s … and %d more in the last %s", w.first.Message, w.dropped, span)
	// A failed write of a summary has nowhere better to go.
	_ = g.out.Write(ent, []zapcore.Field{zap.Int("suppressed", w.dropped)})
}

// flush writes every pending summary now (at Sync, before exit).
func (g *floodGate) flush() {
	g.mu.Lock()
	defer g.mu.Unlock()
	for key, w := range g.windows {
		g.closeLocked(key, w)
	}
}
