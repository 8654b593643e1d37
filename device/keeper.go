package device

import (
	"context"
	"math/rand/v2"
	"time"

	"go.uber.org/zap"
)

// Backoff bounds the delay between reopen attempts.
type Backoff struct {
	Min time.Duration
	Max time.Duration
}

// DefaultBackoff retries after 200 ms, doubling to 5 s.
func DefaultBackoff() Backoff { return Backoff{Min: 200 * time.Millisecond, Max: 5 * time.Second} }

// Observer is told when a device comes and goes; nil means none.
type Observer interface {
	DeviceUp(device string, up bool)
}

// Keeper keeps a device session running: it opens the device, runs the
// session until it fails (unplugged, read error), and reopens with capped,
// jittered backoff. It logs one line per state change, not one per retry.
type Keeper struct {
	Name     string // for logs and metrics: "scanner", "keypad", "display", "ecr"
	Backoff  Backoff
	Logger   *zap.Logger
	Observer Observer
}

// Session opens a device and uses it until it fails or ctx ends. It calls
// up() once the device is open and working.
type Session func(ctx context.Context, up func()) error

// Run runs session again and again until ctx ends.
func (k *Keeper) Run(ctx context.Context, session Session) error {
	log := k.Logger
	if log == nil {
		log = zap.NewNop()
	}
	b := k.Backoff
	if b.Min <= 0 {
		b = DefaultBackoff()
	}
	delay := b.Min
	state := "starting"
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	for {
		wasUp := false
		err := session(ctx, func() {
			wasUp = true
			if state != "up" {
				log.Info("device ready", zap.String("device", k.Name))
				state = "up"
				if k.Observer != nil {
					k.Observer.DeviceUp(k.Name, true)
				}
			}
		})
		if ctx.Err() != nil {
			return nil
		}
		if wasUp {
			delay = b.Min
			log.Warn("device lost; reopening", zap.String("device", k.Name), zap.Error(err))
			state = "down"
			if k.Observer != nil {
				k.Observer.DeviceUp(k.Name, false)
			}
		} else if state != "down" {
			log.Warn("device unavailable; retrying", zap.String("device", k.Name), zap.Error(err))
			state = "down"
			if k.Observer != nil {
				k.Observer.DeviceUp(k.Name, false)
			}
		}
		jitter := time.Duration(rand.Int64N(int64(delay)/4 + 1))
		timer.Reset(delay + jitter)
		select {
		case <-ctx.Done():
			return nil
		case <-timer.C:
		}
		delay = min(delay*2, b.Max)
	}
}
