// Package keypad turns a USB numeric keypad (an evdev keyboard read through
// device/input, grabbed and reopened after an unplug) into amount entry:
// digits typed in cents, backspace, enter to confirm, a cancel key. Each
// entry goes to a Sink, as each scanned code goes to a scanner.Sink; the
// amount is echoed as it is typed and bounded by the terminal's maximum and
// a digit limit.
package keypad

import (
	"context"
	"errors"

	"go.uber.org/zap"

	"github.com/scanpay/scanpay/device"
	"github.com/scanpay/scanpay/device/input"
)

// Kind is what a key did to the entry.
type Kind int

// Entry event kinds.
const (
	Typing  Kind = iota // the amount changed (echo it)
	Confirm             // Enter with a valid amount
	Cancel              // the cancel key
	Refused             // a key that was not taken (Reason says why)
)

// Event is the result of one key.
type Event struct {
	Kind   Kind
	Amount int64 // cents
	Reason string
}

// Config bounds and maps the entry.
type Config struct {
	MaxAmount  int64    // cents
	MaxDigits  int      // default 8 ($999,999.99)
	CancelKeys []uint16 // default Esc, NumLock, keypad minus
	// OnRefuse, when set, counts every refused key: the log summarises
	// a stuck key, the count stays whole.
	OnRefuse func(reason string)
}

// Editor is the amount being typed. It is pure logic, fed key codes.
type Editor struct {
	cfg    Config
	amount int64
	digits int
}

// NewEditor builds an editor; zero fields take the defaults.
func NewEditor(cfg Config) *Editor {
	if cfg.MaxDigits <= 0 || cfg.MaxDigits > 10 {
		cfg.MaxDigits = 8
	}
	if cfg.MaxAmount <= 0 {
		cfg.MaxAmount = 99999999
	}
	if len(cfg.CancelKeys) == 0 {
		cfg.CancelKeys = []uint16{input.KeyEsc, input.KeyNumLock, input.KeyKPMinus}
	}
	return &Editor{cfg: cfg}
}

var digitKeys = map[uint16]int64{
	input.KeyKP0: 0, input.KeyKP1: 1, input.KeyKP2: 2, input.KeyKP3: 3, input.KeyKP4: 4,
	input.KeyKP5: 5, input.KeyKP6: 6, input.KeyKP7: 7, input.KeyKP8: 8, input.KeyKP9: 9,
	11: 0, 2: 1, 3: 2, 4: 3, 5: 4, 6: 5, 7: 6, 8: 7, 9: 8, 10: 9, // the main row, for full keyboards
}

// Amount is the amount typed so far, in cents.
func (e *Editor) Amount() int64 { return e.amount }

// Clear forgets the entry.
func (e *Editor) Clear() { e.amount, e.digits = 0, 0 }

// Key takes one key press. ok is false for keys the keypad ignores.
func (e *Editor) Key(code uint16) (Event, bool) {
	for _, c := range e.cfg.CancelKeys {
		if c == code {
			e.Clear()
			return Event{Kind: Cancel}, true
		}
	}
	if d, isDigit := digitKeys[code]; isDigit {
		switch {
		case e.digits == 0 && d == 0:
			return Event{Kind: Refused, Reason: "leading zero", Amount: e.amount}, true
		case e.digits >= e.cfg.MaxDigits:
			return Event{Kind: Refused, Reason: "too many digits", Amount: e.amount}, true
		}
		// A digit past the maximum is taken and shown, so the cashier sees
		// what was typed (and the lane shows the limit with a beep); Enter
		// then waits for a correction. Dropping the digit would leave a
		// smaller amount that Enter would charge.
		e.amount = e.amount*10 + d
		e.digits++
		return Event{Kind: Typing, Amount: e.amount}, true
	}
	switch code {
	case input.KeyBackspace, input.KeyDelete:
		e.amount /= 10
		if e.digits > 0 {
			e.digits--
		}
		return Event{Kind: Typing, Amount: e.amount}, true
	case input.KeyKPEnter, input.KeyEnter:
		if e.amount == 0 {
			return Event{Kind: Refused, Reason: "enter an amount first"}, true
		}
		if e.amount > e.cfg.MaxAmount {
			return Event{Kind: Refused, Reason: "over the maximum amount: correct it", Amount: e.amount}, true
		}
		amount := e.amount
		e.Clear()
		return Event{Kind: Confirm, Amount: amount}, true
	}
	return Event{}, false
}

// Sink receives entry events (the terminal, through the daemon).
type Sink interface {
	Typing(ctx context.Context, amount int64) error
	Confirm(ctx context.Context, amount int64) error
	Cancel(ctx context.Context) error
}

// Keypad reads a keypad device.
type Keypad struct {
	Device   input.DeviceSpec
	Config   Config
	Backoff  device.Backoff
	Logger   *zap.Logger
	Observer device.Observer
}

// Run reads keys until ctx ends and hands entry events to sink.
func (k *Keypad) Run(ctx context.Context, sink Sink) error {
	log := k.Logger
	if log == nil {
		log = zap.NewNop()
	}
	ed := NewEditor(k.Config)
	r := &input.KeyboardReader{Device: k.Device,
		Keeper:  device.Keeper{Name: "keypad", Backoff: k.Backoff, Logger: log, Observer: k.Observer},
		OnReset: ed.Clear}
	return r.Run(ctx, func(ev input.KeyEvent) {
		if ev.Value != input.KeyPressed {
			return
		}
		Feed(ctx, ed, ev.Code, sink, log)
	})
}

// Feed applies one key press to the editor and tells sink.
func Feed(ctx context.Context, ed *Editor, code uint16, sink Sink, log *zap.Logger) {
	e, ok := ed.Key(code)
	if !ok {
		return
	}
	var err error
	switch e.Kind {
	case Typing:
		err = sink.Typing(ctx, e.Amount)
	case Confirm:
		err = sink.Confirm(ctx, e.Amount)
		if err != nil {
			log.Info("amount not taken", zap.Int64("amount", e.Amount), zap.Error(err))
			_ = sink.Typing(ctx, 0)
		}
		return
	case Cancel:
		err = sink.Cancel(ctx)
	case Refused:
		log.Info("key refused", zap.String("reason", e.Reason))
		if ed.cfg.OnRefuse != nil {
			ed.cfg.OnRefuse(e.Reason)
		}
		if e.Amount > ed.cfg.MaxAmount {
			// Enter held over the limit: show the limit again, with a beep.
			err = sink.Typing(ctx, e.Amount)
		}
	}
	if err != nil && !errors.Is(err, context.Canceled) {
		log.Info("keypad event not taken", zap.Error(err))
	}
}
