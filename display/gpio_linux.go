package display

import (
	"fmt"
	"time"

	"github.com/warthog618/go-gpiocdev"
)

// OpenGPIO drives an active buzzer on a GPIO line. chip is a chip's label
// (e.g. "pinctrl-bcm2711", stable across kernels) or name ("gpiochip0").
func OpenGPIO(chip string, offset int, activeLow bool) (*Beeper, error) {
	name, err := findChip(chip)
	if err != nil {
		return nil, err
	}
	opts := []gpiocdev.LineReqOption{gpiocdev.WithConsumer("scanpay-beeper"), gpiocdev.AsOutput(0)}
	if activeLow {
		opts = append(opts, gpiocdev.AsActiveLow)
	}
	line, err := gpiocdev.RequestLine(name, offset, opts...)
	if err != nil {
		return nil, fmt.Errorf("beeper: request %s line %d: %w", name, offset, err)
	}
	return &Beeper{dev: gpioSwitch{line}, sleep: time.Sleep}, nil
}

func findChip(want string) (string, error) {
	var seen []string
	for _, name := range gpiocdev.Chips() {
		if name == want {
			return name, nil
		}
		c, err := gpiocdev.NewChip(name)
		if err != nil {
			continue
		}
		label := c.Label
		c.Close()
		if label == want {
			return name, nil
		}
		seen = append(seen, name+" ("+label+")")
	}
	return "", fmt.Errorf("beeper: no GPIO chip named or labelled %q (found: %v)", want, seen)
}
