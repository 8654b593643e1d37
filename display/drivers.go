package display

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/scanpay/scanpay/device"
	"github.com/scanpay/scanpay/device/serial"
	"github.com/scanpay/scanpay/payment"
)

// Protocol is a display's command set.
type Protocol interface {
	// Init resets the display: clear, cursor off, overwrite mode.
	Init() []byte
	// Line writes row (0 or 1) with text of exactly the display's width.
	Line(row int, text string) []byte
	// Bell sounds the display's buzzer, when it has one.
	Bell() []byte
}

// EscPos is the Epson ESC/POS customer display command set.
type EscPos struct{ Brightness int }

func (p EscPos) Init() []byte {
	b := []byte{0x1b, 0x40, 0x0c, 0x1f, 0x43, 0x00, 0x1f, 0x01}
	if p.Brightness >= 1 && p.Brightness <= 4 {
		b = append(b, 0x1f, 0x58, byte(p.Brightness))
	}
	return b
}

func (EscPos) Line(row int, text string) []byte {
	return append([]byte{0x1f, 0x24, 1, byte(row + 1)}, text...)
}

func (EscPos) Bell() []byte { return []byte{0x07} }

// CD5220 is the CD5220 command set. After ESC Q A/B the display takes text
// until CR and ignores commands meanwhile, so every line ends with CR and
// the text itself can hold no control byte (ASCII drops them).
type CD5220 struct{ Brightness int }

func (p CD5220) Init() []byte {
	b := []byte{0x1b, 0x40, 0x0c, 0x1b, 0x5f, 0x00, 0x1b, 0x11}
	if p.Brightness >= 1 && p.Brightness <= 4 {
		b = append(b, 0x1b, 0x2a, byte(p.Brightness))
	}
	return b
}

func (CD5220) Line(row int, text string) []byte {
	b := []byte{0x1b, 0x51, byte('A' + row)}
	b = append(b, text...)
	return append(b, 0x0d)
}

func (CD5220) Bell() []byte { return []byte{0x07} }

// Device is an open display connection. Displays send nothing, but a read
// that fails tells the driver the cable was pulled even when no screen is
// being written.
type Device interface {
	io.ReadWriter
	Close() error
	SetWriteDeadline(time.Time) error
}

// Opener opens the display's device.
type Opener func() (Device, error)

// SerialOpener opens a display on a serial port.
func SerialOpener(c serial.PortConfig) Opener {
	return func() (Device, error) { return serial.OpenTTY(c) }
}

// Config configures a line display.
type Config struct {
	Protocol     Protocol
	Open         Opener
	Layout       Layout
	WriteTimeout time.Duration // default 2 s
	Backoff      device.Backoff
	Logger       *zap.Logger
	Observer     device.Observer
}

var (
	_ payment.InstantScreenSink = (*Pole)(nil)
	_ payment.ScreenSink        = (*Console)(nil)
	_ payment.ScreenSink        = None{}
)

// Pole drives a serial line display. Show never blocks: it records the
// newest screen, and Run (its own goroutine) draws it, writing only lines
// that changed, and reopens the port after any failure.
type Pole struct {
	cfg    Config
	mu     sync.Mutex
	latest Lines
	bells  int
	have   bool
	wake   chan struct{}
}

// NewPole builds a display driver.
func NewPole(cfg Config) *Pole {
	if cfg.WriteTimeout <= 0 {
		cfg.WriteTimeout = 2 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	return &Pole{cfg: cfg, wake: make(chan struct{}, 1)}
}

// ShowsInstantly marks Show as never blocking (payment.InstantScreenSink):
// it only records the screen for Run.
func (p *Pole) ShowsInstantly() {}

// Show implements payment.ScreenSink.
func (p *Pole) Show(s payment.Screen) error {
	p.mu.Lock()
	p.latest, p.have = p.cfg.Layout.Render(s), true
	p.mu.Unlock()
	p.poke()
	return nil
}

// Bell asks for the display's bell (a beeper driver).
func (p *Pole) Bell() {
	p.mu.Lock()
	p.bells++
	p.mu.Unlock()
	p.poke()
}

func (p *Pole) poke() {
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

// Run drives the device until ctx ends.
func (p *Pole) Run(ctx context.Context) error {
	k := device.Keeper{Name: "display", Backoff: p.cfg.Backoff, Logger: p.cfg.Logger, Observer: p.cfg.Observer}
	return k.Run(ctx, p.session)
}

var errWriteTimeout = errors.New("display did not take the data in time")

func (p *Pole) session(ctx context.Context, up func()) error {
	dev, err := p.cfg.Open()
	if err != nil {
		return err
	}
	lost := make(chan error, 1)
	var reader sync.WaitGroup
	reader.Add(1)
	go func() {
		defer reader.Done()
		buf := make([]byte, 64)
		for {
			if _, err := dev.Read(buf); err != nil {
				lost <- err
				return
			}
		}
	}()
	defer reader.Wait()
	defer dev.Close() // releases the reader
	write := func(b []byte) error {
		if err := dev.SetWriteDeadline(time.Now().Add(p.cfg.WriteTimeout)); err != nil {
			return err
		}
		if _, err := dev.Write(b); err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				return errWriteTimeout
			}
			return err
		}
		return nil
	}
	if err := write(p.cfg.Protocol.Init()); err != nil {
		return fmt.Errorf("initialise display: %w", err)
	}
	up()
	var shown Lines
	valid := false // after a (re)open every line is redrawn
	var out []byte
	for {
		p.mu.Lock()
		want, have, bells := p.latest, p.have, p.bells
		p.bells = 0
		p.mu.Unlock()
		// One write per wake-up: the changed lines and any bells go to the
		// device together (one syscall, and the screen changes at once).
		out = out[:0]
		if have {
			for row := 0; row < 2; row++ {
				if !valid || shown[row] != want[row] {
					out = append(out, p.cfg.Protocol.Line(row, want[row])...)
				}
			}
		}
		for ; bells > 0; bells-- {
			out = append(out, p.cfg.Protocol.Bell()...)
		}
		if len(out) > 0 {
			if err := write(out); err != nil {
				return err
			}
		}
		if have {
			shown, valid = want, true
		}
		select {
		case <-ctx.Done():
			return nil
		case err := <-lost:
			return fmt.Errorf("display gone: %w", err)
		case <-p.wake:
		}
	}
}

// Console renders screens as a boxed two-line display on a writer, for
// development and the demo.
type Console struct {
	Layout Layout
	Out    io.Writer
	// Prefix starts each printed line (the demo indents the display).
	Prefix string
	mu     sync.Mutex
	last   Lines
	drawn  bool
}

// Show implements payment.ScreenSink; an unchanged screen is not redrawn.
func (c *Console) Show(s payment.Screen) error {
	l := c.Layout.Render(s)
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.drawn && l == c.last {
		return nil
	}
	c.last, c.drawn = l, true
	w := len(l[0])
	edge := c.Prefix + "+" + strings.Repeat("-", w) + "+\n"
	_, err := fmt.Fprintf(c.Out, "%s%s|%s|\n%s|%s|\n%s", edge, c.Prefix, l[0], c.Prefix, l[1], edge)
	return err
}

// None shows nothing.
type None struct{}

// Show implements payment.ScreenSink.
func (None) Show(payment.Screen) error { return nil }
