package main

import (
	"context"
	"fmt"
	"io"
	"time"

	evdev "github.com/holoplot/go-evdev"

	"github.com/scanpay/scanpay/device/input"
)

// typeUinput creates a virtual keyboard, types every code with realistic
// timing and removes the device (an unplug) when done.
func typeUinput(ctx context.Context, name string, vendor, product uint16, steps []step, typeKeys keyTyper, term uint16, keyDelay, gap, settle, hold time.Duration, stdout io.Writer) error {
	var keys []evdev.EvCode
	for c := uint16(1); c < 128; c++ {
		if _, ok := input.KeyRune(c, false, false); ok || c == input.KeyEnter || c == input.KeyKPEnter ||
			c == input.KeyTab || c == input.KeyLeftShift || c == input.KeyRightShift || c == input.KeyCapsLock ||
			c == input.KeyBackspace || c == input.KeyEsc {
			keys = append(keys, evdev.EvCode(c))
		}
	}
	dev, err := evdev.CreateDevice(name, evdev.InputID{BusType: 0x03, Vendor: vendor, Product: product, Version: 1},
		map[evdev.EvType][]evdev.EvCode{evdev.EvType(input.EvKey): keys})
	if err != nil {
		return fmt.Errorf("create uinput device (is /dev/uinput there and writable?): %w", err)
	}
	defer evdev.DestroyDevice(dev)
	fmt.Fprintf(stdout, "created virtual scanner %q\n", name)
	if err := sleep(ctx, settle); err != nil {
		return err
	}
	err = play(ctx, steps, gap, func(code string) error {
		evs, _ := typeKeys(code, term, time.Now(), 0)
		for j, ev := range evs {
			if err := dev.WriteOne(&evdev.InputEvent{Type: evdev.EvType(ev.Type), Code: evdev.EvCode(ev.Code), Value: ev.Value}); err != nil {
				return fmt.Errorf("write event: %w", err)
			}
			// One key per keyDelay: pause after each character's release.
			if ev.Type == input.EvSyn && j > 0 && evs[j-1].Value == input.KeyReleased && evs[j-1].Code != input.KeyLeftShift {
				if err := sleep(ctx, keyDelay); err != nil {
					return err
				}
			}
		}
		fmt.Fprintf(stdout, "typed %s\n", mask(code))
		return nil
	})
	if err != nil {
		return err
	}
	return sleep(ctx, hold)
}
