package scanner

import (
	"time"

	"github.com/scanpay/scanpay/device/input"
)

// DecoderConfig tunes HID decoding.
type DecoderConfig struct {
	// Terminators end a code: input.KeyEnter, input.KeyKPEnter, input.KeyTab.
	Terminators []uint16
	// IdleTimeout drops a partial code when the next key comes later than
	// this (a scanner types a code in tens of milliseconds; a human is slow).
	IdleTimeout time.Duration
	// MaxLen caps a code; past it, keys are discarded up to the terminator.
	MaxLen int
	// StripAIM removes an AIM symbology identifier (]Q1, ]E0, …) in front.
	StripAIM bool
}

// DefaultDecoderConfig: Enter or keypad Enter, 300 ms idle, 64 characters.
func DefaultDecoderConfig() DecoderConfig {
	return DecoderConfig{Terminators: []uint16{input.KeyEnter, input.KeyKPEnter}, IdleTimeout: 300 * time.Millisecond, MaxLen: 64}
}

// DecodeStats counts what the decoder dropped.
type DecodeStats struct {
	Codes    int // codes emitted
	Partial  int // partial codes dropped after an idle gap
	Overlong int // codes dropped for exceeding MaxLen
	Unmapped int // keys with no character (ignored)
	Empty    int // terminators with nothing before them
}

// Decoder turns key events into codes. It is not safe for concurrent use;
// the reader that owns it feeds it from one goroutine.
type Decoder struct {
	cfg        DecoderConfig
	buf        []rune
	leftShift  bool
	rightShift bool
	caps       bool
	last       time.Time
	discarding bool
	Stats      DecodeStats
}

// NewDecoder builds a decoder; zero fields of cfg take the defaults.
func NewDecoder(cfg DecoderConfig) *Decoder {
	def := DefaultDecoderConfig()
	if len(cfg.Terminators) == 0 {
		cfg.Terminators = def.Terminators
	}
	if cfg.IdleTimeout <= 0 {
		cfg.IdleTimeout = def.IdleTimeout
	}
	if cfg.MaxLen <= 0 {
		cfg.MaxLen = def.MaxLen
	}
	return &Decoder{cfg: cfg}
}

func (d *Decoder) isTerminator(code uint16) bool {
	for _, t := range d.cfg.Terminators {
		if t == code {
			return true
		}
	}
	return false
}

// Reset forgets any partial code and modifier state (after a reopen).
func (d *Decoder) Reset() {
	d.buf = d.buf[:0]
	d.leftShift, d.rightShift, d.caps, d.discarding = false, false, false, false
	d.last = time.Time{}
}

// Feed takes one key event. It returns a code when ev terminates one.
func (d *Decoder) Feed(ev input.KeyEvent) (string, bool) {
	switch ev.Code {
	case input.KeyLeftShift:
		d.leftShift = ev.Value != input.KeyReleased
		return "", false
	case input.KeyRightShift:
		d.rightShift = ev.Value != input.KeyReleased
		return "", false
	}
	if ev.Value != input.KeyPressed {
		return "", false // releases and auto-repeats carry no characters
	}
	if ev.Code == input.KeyCapsLock {
		d.caps = !d.caps
		return "", false
	}
	if (len(d.buf) > 0 || d.discarding) && !d.last.IsZero() && ev.Time.Sub(d.last) > d.cfg.IdleTimeout {
		if !d.discarding {
			d.Stats.Partial++
		}
		d.buf = d.buf[:0]
		d.discarding = false
	}
	d.last = ev.Time
	if d.isTerminator(ev.Code) {
		if d.discarding {
			d.discarding = false
			return "", false
		}
		code := string(d.buf)
		d.buf = d.buf[:0]
		if d.cfg.StripAIM {
			code = StripAIM(code)
		}
		if code == "" {
			d.Stats.Empty++
			return "", false
		}
		d.Stats.Codes++
		return code, true
	}
	r, ok := input.KeyRune(ev.Code, d.leftShift || d.rightShift, d.caps)
	if !ok {
		d.Stats.Unmapped++
		return "", false
	}
	if d.discarding {
		return "", false
	}
	if len(d.buf) >= d.cfg.MaxLen {
		d.Stats.Overlong++
		d.buf = d.buf[:0]
		d.discarding = true
		return "", false
	}
	d.buf = append(d.buf, r)
	return "", false
}

// StripAIM removes a leading AIM symbology identifier: "]" then a code
// character then a modifier character, e.g. "]Q1" (QR), "]E0" (EAN-13).
func StripAIM(code string) string {
	if len(code) >= 3 && code[0] == ']' && isAIMChar(code[1]) && isAIMChar(code[2]) {
		return code[3:]
	}
	return code
}

func isAIMChar(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z'
}

// DecodeStream decodes every code in an event stream, as the evdev reader
// would. It serves replayed recordings (tests, tools).
func DecodeStream(events []input.RawEvent, d *Decoder) []string {
	var codes []string
	for _, ev := range events {
		if ev.Type != input.EvKey {
			continue
		}
		if code, ok := d.Feed(input.KeyEvent{Code: ev.Code, Value: ev.Value, Time: ev.Time}); ok {
			codes = append(codes, code)
		}
	}
	return codes
}
