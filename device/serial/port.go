// Package serial opens serial ports for device packages: port settings
// (speed, character size, parity) checked with errors that name the
// setting, and OpenTTY, which every device package uses: the port is
// served by Go's poller, so deadlines work, Close releases a blocked call,
// and a waiting reader holds no thread. OpenPort (go.bug.st/serial, a
// read that blocks its thread) is kept for tools.
package serial

import (
	"fmt"
	"strings"

	bugst "go.bug.st/serial"
)

// PortConfig describes a serial port.
type PortConfig struct {
	Path     string
	Baud     int
	DataBits int    // 7 or 8
	Parity   string // none, even, odd
}

// Field names a port setting.
type Field string

// The settings a FieldError can name.
const (
	FieldPath     Field = "path"
	FieldBaud     Field = "baud"
	FieldDataBits Field = "data_bits"
	FieldParity   Field = "parity"
)

// FieldError is a port setting that is not valid. Callers that map
// settings to their own names (config keys) branch on Field, never on the
// message.
type FieldError struct {
	Field Field
	Msg   string
}

func (e *FieldError) Error() string { return e.Msg }

// Validate checks the settings' form (not that the port exists). The error
// is a *FieldError naming the first bad setting.
func (c PortConfig) Validate() error {
	if c.Path == "" {
		return &FieldError{FieldPath, "no serial port path"}
	}
	switch c.Baud {
	case 1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200:
	default:
		return &FieldError{FieldBaud, fmt.Sprintf("baud %d is not a standard rate (1200–115200)", c.Baud)}
	}
	if c.DataBits != 7 && c.DataBits != 8 {
		return &FieldError{FieldDataBits, fmt.Sprintf("data bits %d must be 7 or 8", c.DataBits)}
	}
	if _, err := parseParity(c.Parity); err != nil {
		return err
	}
	return nil
}

func parseParity(p string) (bugst.Parity, error) {
	switch strings.ToLower(p) {
	case "", "none", "n":
		return bugst.NoParity, nil
	case "even", "e":
		return bugst.EvenParity, nil
	case "odd", "o":
		return bugst.OddParity, nil
	}
	return 0, &FieldError{FieldParity, fmt.Sprintf("parity %q must be none, even or odd", p)}
}

// OpenPort opens a serial port in raw mode with exclusive access.
func OpenPort(c PortConfig) (bugst.Port, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	parity, _ := parseParity(c.Parity)
	p, err := bugst.Open(c.Path, &bugst.Mode{BaudRate: c.Baud, DataBits: c.DataBits, Parity: parity, StopBits: bugst.OneStopBit})
	if err != nil {
		return nil, fmt.Errorf("open serial port %s: %w", c.Path, err)
	}
	return p, nil
}
