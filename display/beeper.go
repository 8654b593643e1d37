package display

import (
	"fmt"
	"os"
	"time"

	evdev "github.com/holoplot/go-evdev"

	"github.com/scanpay/scanpay/device/input"
	"github.com/scanpay/scanpay/payment"
)

// Tone is one sound of a pattern: on for On (at Hz where the device can
// set a pitch), then silent for Off.
type Tone struct {
	On, Off time.Duration
	Hz      int
}

// Pattern returns the tones for a beep: a click when a code is accepted,
// one short tone when approved, three when declined or on an error.
func Pattern(b payment.Beep) []Tone {
	switch b {
	case payment.BeepAccepted:
		return []Tone{{On: 30 * time.Millisecond, Hz: 3000}}
	case payment.BeepApproved:
		return []Tone{{On: 150 * time.Millisecond, Hz: 2000}}
	default:
		return []Tone{{On: 100 * time.Millisecond, Off: 100 * time.Millisecond, Hz: 800},
			{On: 100 * time.Millisecond, Off: 100 * time.Millisecond, Hz: 800},
			{On: 100 * time.Millisecond, Hz: 800}}
	}
}

var (
	_ payment.BeepSink = (*Beeper)(nil)
	_ payment.BeepSink = BellBeeper{}
	_ payment.BeepSink = NoBeeper{}
)

// switcher turns a sound on (hz > 0) or off (hz == 0).
type switcher interface {
	set(hz int) error
	Close() error
}

// Beeper plays patterns on a device. Beep blocks for the pattern's length
// (under half a second); the engine calls it from an output goroutine.
type Beeper struct {
	dev   switcher
	sleep func(time.Duration)
}

// Beep implements payment.BeepSink. The sound is always switched off at
// the end, even after a failed step.
func (b *Beeper) Beep(p payment.Beep) error {
	for _, t := range Pattern(p) {
		if err := b.dev.set(t.Hz); err != nil {
			b.dev.set(0)
			return fmt.Errorf("beeper: %w", err)
		}
		b.sleep(t.On)
		if err := b.dev.set(0); err != nil {
			return fmt.Errorf("beeper: %w", err)
		}
		b.sleep(t.Off)
	}
	return nil
}

// Close releases the device.
func (b *Beeper) Close() error { return b.dev.Close() }

// gpioLine is the part of *gpiocdev.Line the beeper uses.
type gpioLine interface {
	SetValue(int) error
	Close() error
}

type gpioSwitch struct{ line gpioLine }

func (g gpioSwitch) set(hz int) error {
	v := 0
	if hz > 0 {
		v = 1
	}
	return g.line.SetValue(v)
}

func (g gpioSwitch) Close() error { return g.line.Close() }

// eventWriter is the part of *evdev.InputDevice the tone beeper uses.
type eventWriter interface {
	WriteOne(*evdev.InputEvent) error
	Close() error
}

type toneSwitch struct{ w eventWriter }

func (t toneSwitch) set(hz int) error {
	if err := t.w.WriteOne(&evdev.InputEvent{Type: evdev.EV_SND, Code: evdev.SND_TONE, Value: int32(hz)}); err != nil {
		return err
	}
	return t.w.WriteOne(&evdev.InputEvent{Type: evdev.EV_SYN, Code: evdev.SYN_REPORT})
}

func (t toneSwitch) Close() error { return t.w.Close() }

// OpenTone drives an evdev EV_SND device (pwm-beeper, pcspkr).
func OpenTone(spec input.DeviceSpec) (*Beeper, error) {
	if err := spec.Validate(); err != nil {
		return nil, fmt.Errorf("beeper: %w", err)
	}
	path := spec.Path
	if path == "" {
		return nil, fmt.Errorf("beeper: the tone device needs a path (e.g. /dev/input/by-path/platform-pwm-beeper-event)")
	}
	dev, err := evdev.OpenWithFlags(path, os.O_WRONLY)
	if err != nil {
		return nil, fmt.Errorf("beeper: open %s: %w", path, err)
	}
	return &Beeper{dev: toneSwitch{dev}, sleep: time.Sleep}, nil
}

// BellBeeper rings the line display's bell: once when approved, three
// times when declined. The click for an accepted code is left out: a
// display bell is too loud for it.
type BellBeeper struct{ Pole *Pole }

// Beep implements payment.BeepSink.
func (b BellBeeper) Beep(p payment.Beep) error {
	switch p {
	case payment.BeepApproved:
		b.Pole.Bell()
	case payment.BeepDeclined:
		b.Pole.Bell()
		b.Pole.Bell()
		b.Pole.Bell()
	}
	return nil
}

// NoBeeper is silent.
type NoBeeper struct{}

// Beep implements payment.BeepSink.
func (NoBeeper) Beep(payment.Beep) error { return nil }
