package scanner

import (
	"context"

	"go.uber.org/zap"

	"github.com/scanpay/scanpay/device"
	"github.com/scanpay/scanpay/device/input"
)

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

// Run reads codes until ctx ends and hands each to sink.
func (s *HIDScanner) Run(ctx context.Context, sink Sink) error {
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
		_ = sink.Scan(ctx, Code{Text: code, Source: source, At: ev.Time}) // an error means ctx ended or the taker stopped
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
