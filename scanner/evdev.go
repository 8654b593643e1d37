package scanner

import (
	"context"
	"time"

	"go.uber.org/zap"

	"github.com/scanpay/scanpay/device"
	"github.com/scanpay/scanpay/device/input"
)

// Code is one scanned code.
type Code struct {
	Text   string
	Source string    // device, for logs
	At     time.Time // when the terminating key or byte arrived
}

// Source delivers scanned codes on out until ctx ends.
type Source interface {
	Run(ctx context.Context, out chan<- Code) error
}

// HIDScanner is a keyboard-wedge scanner read through evdev.
type HIDScanner struct {
	Device  input.DeviceSpec
	Decoder DecoderConfig
	Backoff device.Backoff
	Logger  *zap.Logger
	// Observer is told about device changes and rejected input.
	Observer device.Observer
	OnReject func(reason string)
}

var _ Source = (*HIDScanner)(nil)

// Run reads codes until ctx ends.
func (s *HIDScanner) Run(ctx context.Context, out chan<- Code) error {
	log := s.Logger
	if log == nil {
		log = zap.NewNop()
	}
	dec := NewDecoder(s.Decoder)
	r := &input.KeyboardReader{Device: s.Device, Keeper: device.Keeper{Name: "scanner", Backoff: s.Backoff, Logger: log, Observer: s.Observer}, OnReset: dec.Reset}
	source := s.Device.String()
	return r.Run(ctx, func(ev input.KeyEvent) {
		before := dec.Stats
		code, ok := dec.Feed(ev)
		s.countDrops(log, before, dec.Stats)
		if !ok {
			return
		}
		select {
		case out <- Code{Text: code, Source: source, At: ev.Time}:
		case <-ctx.Done():
		}
	})
}

func (s *HIDScanner) countDrops(log *zap.Logger, before, after DecodeStats) {
	report := func(n int, reason string) {
		if n > 0 {
			log.Info("scanner input dropped", zap.String("reason", reason))
			if s.OnReject != nil {
				s.OnReject(reason)
			}
		}
	}
	report(after.Partial-before.Partial, "partial")
	report(after.Overlong-before.Overlong, "overlong")
}
