package scanner

import (
	"context"
	"fmt"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/scanpay/scanpay/device"
	"github.com/scanpay/scanpay/device/serial"
)

// FramerConfig tunes serial line framing.
type FramerConfig struct {
	// Terminator: "auto" (CR or LF; CRLF gives one line), "cr", "lf", "crlf".
	Terminator string
	MaxLen     int
}

// FramerStats counts rejected lines.
type FramerStats struct {
	Lines    int
	Control  int // lines with control or non-ASCII bytes
	Overlong int
}

// Framer splits a byte stream into lines. Lines with control bytes or
// longer than MaxLen are dropped and counted; it resynchronises on the next
// terminator.
type Framer struct {
	term       string
	maxLen     int
	buf        []byte
	bad        bool
	discarding bool
	Stats      FramerStats
}

// NewFramer checks cfg and builds a framer.
func NewFramer(cfg FramerConfig) (*Framer, error) {
	t := strings.ToLower(cfg.Terminator)
	switch t {
	case "":
		t = "auto"
	case "auto", "cr", "lf", "crlf":
	default:
		return nil, fmt.Errorf("line terminator %q must be auto, cr, lf or crlf", cfg.Terminator)
	}
	if cfg.MaxLen <= 0 {
		cfg.MaxLen = 64
	}
	return &Framer{term: t, maxLen: cfg.MaxLen}, nil
}

func (f *Framer) terminates(b byte) bool {
	switch f.term {
	case "cr":
		return b == '\r'
	case "lf", "crlf":
		return b == '\n'
	}
	return b == '\r' || b == '\n'
}

// Feed takes one byte and returns a line when b completes a good one.
func (f *Framer) Feed(b byte) (string, bool) {
	if f.terminates(b) {
		line, bad, over := f.buf, f.bad, f.discarding
		f.buf, f.bad, f.discarding = f.buf[:0], false, false
		if f.term == "crlf" && len(line) > 0 && line[len(line)-1] == '\r' {
			line = line[:len(line)-1]
		}
		switch {
		case over:
			return "", false
		case len(line) == 0:
			return "", false // CRLF's second half, or a blank line
		case bad:
			f.Stats.Control++
			return "", false
		}
		f.Stats.Lines++
		return string(line), true
	}
	if (b == '\r' || b == '\n') && len(f.buf) == 0 {
		return "", false // the other half of a CRLF/LFCR pair
	}
	if f.discarding {
		return "", false
	}
	if len(f.buf) >= f.maxLen {
		f.Stats.Overlong++
		f.discarding = true
		return "", false
	}
	if b < 0x20 || b >= 0x7f {
		if !(f.term == "crlf" && b == '\r') {
			f.bad = true
		}
	}
	// In crlf mode a CR is kept only as the first half of the line's
	// CRLF: one followed by anything but LF is a control byte in the line
	// (the fuzzer found "0\r0\n" passing as a code).
	if f.term == "crlf" && len(f.buf) > 0 && f.buf[len(f.buf)-1] == '\r' {
		f.bad = true
	}
	f.buf = append(f.buf, b)
	return "", false
}

// SerialScanner is a scanner on a serial or USB-CDC port.
type SerialScanner struct {
	Port     serial.PortConfig
	Framer   FramerConfig
	Backoff  device.Backoff
	Logger   *zap.Logger
	Observer device.Observer
	OnReject func(reason string)
}

var _ Source = (*SerialScanner)(nil)

// Run reads codes until ctx ends and hands each to sink.
func (s *SerialScanner) Run(ctx context.Context, sink Sink) error {
	if err := s.Port.Validate(); err != nil {
		return err
	}
	if _, err := NewFramer(s.Framer); err != nil {
		return err
	}
	log := s.Logger
	if log == nil {
		log = zap.NewNop()
	}
	k := device.Keeper{Name: "scanner", Backoff: s.Backoff, Logger: log, Observer: s.Observer}
	return k.Run(ctx, func(ctx context.Context, up func()) error {
		return s.session(ctx, up, sink, log)
	})
}

func (s *SerialScanner) session(ctx context.Context, up func(), sink Sink, log *zap.Logger) error {
	port, err := serial.OpenTTY(s.Port)
	if err != nil {
		return err
	}
	defer port.Close()
	stop := context.AfterFunc(ctx, func() { port.Close() })
	defer stop()
	fr, _ := NewFramer(s.Framer)
	up()
	buf := make([]byte, 256)
	for {
		n, err := port.Read(buf)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("read %s: %w", s.Port.Path, err)
		}
		now := time.Now()
		for _, b := range buf[:n] {
			before := fr.Stats
			line, ok := fr.Feed(b)
			if d := fr.Stats.Control - before.Control; d > 0 {
				s.reject(log, "control")
			}
			if d := fr.Stats.Overlong - before.Overlong; d > 0 {
				s.reject(log, "overlong")
			}
			if !ok {
				continue
			}
			if err := sink.Scan(ctx, Code{Text: line, Source: s.Port.Path, At: now}); err != nil && ctx.Err() != nil {
				return nil
			}
		}
	}
}

func (s *SerialScanner) reject(log *zap.Logger, reason string) {
	log.Info("scanner line dropped", zap.String("reason", reason))
	if s.OnReject != nil {
		s.OnReject(reason)
	}
}
