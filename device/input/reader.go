package input

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	evdev "github.com/holoplot/go-evdev"
	"go.uber.org/zap"

	"github.com/scanpay/scanpay/device"
)

// DeviceSpec names an input device: by path (preferably a stable
// /dev/input/by-id/… link), by the kernel's device name, or by USB
// vendor:product in hex ("0c2e:0b61"). The first one set wins.
type DeviceSpec struct {
	Path          string
	Name          string
	VendorProduct string
	// Root is where devices are searched by name or id (default /dev/input).
	Root string
}

func (s DeviceSpec) String() string {
	switch {
	case s.Path != "":
		return s.Path
	case s.Name != "":
		return fmt.Sprintf("name %q", s.Name)
	}
	return "id " + s.VendorProduct
}

// Validate checks the spec's form.
func (s DeviceSpec) Validate() error {
	if s.Path == "" && s.Name == "" && s.VendorProduct == "" {
		return errors.New("no device path, name or vendor:product given")
	}
	if s.Path == "" && s.Name == "" {
		if _, _, err := ParseVendorProduct(s.VendorProduct); err != nil {
			return err
		}
	}
	return nil
}

// ParseVendorProduct reads "vvvv:pppp", the USB ids in hex.
func ParseVendorProduct(vp string) (uint16, uint16, error) {
	v, p, ok := strings.Cut(vp, ":")
	vendor, err1 := strconv.ParseUint(v, 16, 16)
	product, err2 := strconv.ParseUint(p, 16, 16)
	if !ok || err1 != nil || err2 != nil {
		return 0, 0, fmt.Errorf("vendor:product %q must be two hex numbers like 0c2e:0b61", vp)
	}
	return uint16(vendor), uint16(product), nil
}

// Find resolves the spec to a device node.
func (s DeviceSpec) Find() (string, error) {
	if s.Path != "" {
		return s.Path, nil
	}
	root := s.Root
	if root == "" {
		root = "/dev/input"
	}
	nodes, _ := filepath.Glob(filepath.Join(root, "event*"))
	sort.Strings(nodes)
	for _, node := range nodes {
		dev, err := evdev.OpenWithFlags(node, os.O_RDONLY)
		if err != nil {
			continue
		}
		match := false
		if s.Name != "" {
			name, _ := dev.Name()
			match = name == s.Name
		} else if vendor, product, err := ParseVendorProduct(s.VendorProduct); err == nil {
			id, err := dev.InputID()
			match = err == nil && id.Vendor == vendor && id.Product == product
		}
		dev.Close()
		if match {
			return node, nil
		}
	}
	return "", fmt.Errorf("no input device with %s under %s", s, root)
}

// KeyEvent is one EV_KEY event.
type KeyEvent struct {
	Code  uint16
	Value int32 // KeyPressed, KeyReleased or KeyRepeated
	Time  time.Time
}

// KeyboardReader reads key events from an evdev keyboard, grabbed for
// exclusive use (keystrokes must never reach a console login), and reopens
// it after an unplug. The scanner and the keypad both use it.
type KeyboardReader struct {
	Device  DeviceSpec
	Keeper  device.Keeper
	OnReset func() // called at each (re)open, to drop partial input
}

// Run delivers key events to handle until ctx ends.
func (k *KeyboardReader) Run(ctx context.Context, handle func(KeyEvent)) error {
	if err := k.Device.Validate(); err != nil {
		return err
	}
	return k.Keeper.Run(ctx, func(ctx context.Context, up func()) error {
		return k.session(ctx, up, handle)
	})
}

func (k *KeyboardReader) session(ctx context.Context, up func(), handle func(KeyEvent)) error {
	path, err := k.Device.Find()
	if err != nil {
		return err
	}
	dev, err := evdev.OpenWithFlags(path, os.O_RDONLY)
	if err != nil {
		return fmt.Errorf("open %s: %w", path, err)
	}
	defer dev.Close()
	if !hasKeys(dev) {
		return fmt.Errorf("%s is not a keyboard (no EV_KEY events)", path)
	}
	// Grab before NonBlock: calls that use Fd() make the file blocking again.
	if err := dev.Grab(); err != nil {
		return fmt.Errorf("grab %s (is another program using it?): %w", path, err)
	}
	if err := dev.NonBlock(); err != nil {
		return fmt.Errorf("set %s non-blocking: %w", path, err)
	}
	name, _ := dev.Name()
	k.Keeper.Logger.Info("keyboard opened", zap.String("device", k.Keeper.Name), zap.String("path", path), zap.String("name", name))
	if k.OnReset != nil {
		k.OnReset()
	}
	up()
	stop := context.AfterFunc(ctx, func() { dev.Close() }) // unblocks ReadOne
	defer stop()
	for {
		ev, err := dev.ReadOne()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err // an *os.PathError that names the device
		}
		if ev.Type != EvKey {
			continue
		}
		sec, nsec := ev.Time.Unix()
		handle(KeyEvent{Code: uint16(ev.Code), Value: ev.Value, Time: time.Unix(sec, nsec)})
	}
}

func hasKeys(dev *evdev.InputDevice) bool {
	for _, t := range dev.CapableTypes() {
		if t == EvKey {
			return true
		}
	}
	return false
}
