package display

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"syscall"
	"time"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"

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
// newest screen and, when the port can take it at once, writes it from the
// caller's goroutine with a write that never waits; anything else (a busy
// or full port, a bell, a redraw after reopening) is left to Run, its own
// goroutine, which writes only lines that changed and reopens the port
// after any failure.
type Pole struct {
	cfg    Config
	mu     sync.Mutex
	latest Lines
	bells  int
	have   bool
	wake   chan struct{}

	// Held by whoever writes to the device (Run's session, or Show's
	// direct write, which only tries it); it guards what follows.
	wmu   sync.Mutex
	live  syscall.RawConn // the open port, for direct writes; nil when down or not a file
	shown Lines
	valid bool   // shown is on the device (false after a (re)open)
	tail  []byte // what a direct write left unwritten, Run's to finish
	fast  []byte
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
// it records the screen and at most tries one write that does not wait.
func (p *Pole) ShowsInstantly() {}

// Show implements payment.ScreenSink.
func (p *Pole) Show(s payment.Screen) error {
	lines := p.cfg.Layout.Render(s)
	p.mu.Lock()
	p.latest, p.have = lines, true
	p.mu.Unlock()
	if !p.drawNow() {
		p.poke()
	}
	return nil
}

// drawNow writes the changed lines from the caller's goroutine, saving
// the customer a hand-over to Run's: only when the port is up, no other
// write is under way, and a write that does not wait (the port's file is
// non-blocking) takes them. It reports false when Run has work left: the
// rest of a partial write, or everything.
func (p *Pole) drawNow() bool {
	if !p.wmu.TryLock() {
		return false
	}
	defer p.wmu.Unlock()
	if p.live == nil || len(p.tail) > 0 {
		return false
	}
	p.fast = p.compose(p.fast[:0], false)
	if len(p.fast) == 0 {
		return true
	}
	n := 0
	var werr error
	err := p.live.Write(func(fd uintptr) bool {
		n, werr = unix.Write(int(fd), p.fast)
		return true // one attempt: never wait for the port
	})
	if err != nil || werr != nil || n < len(p.fast) {
		p.tail = append(p.tail[:0], p.fast[max(n, 0):]...)
		return false
	}
	return true
}

// nonBlocking is dev's file for direct writes, or nil: only a file in
// non-blocking mode (as serial.OpenTTY opens it) may be written from the
// lane's goroutine; a write to a blocking one could wait for the device.
func nonBlocking(dev Device) syscall.RawConn {
	sc, ok := dev.(syscall.Conn)
	if !ok {
		return nil
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return nil
	}
	nb := false
	rc.Control(func(fd uintptr) {
		fl, err := unix.FcntlInt(fd, unix.F_GETFL, 0)
		nb = err == nil && fl&unix.O_NONBLOCK != 0
	})
	if !nb {
		return nil
	}
	return rc
}

// compose appends to out what brings the device to the newest screen:
// any unfinished direct write, the lines that changed and, with bells,
// the bells asked for. The device is taken to show it from then on (a
// failed write ends the session, and the next one redraws). wmu is held.
func (p *Pole) compose(out []byte, bells bool) []byte {
	p.mu.Lock()
	want, have, rings := p.latest, p.have, p.bells
	if bells {
		p.bells = 0
	}
	p.mu.Unlock()
	out = append(out, p.tail...)
	p.tail = p.tail[:0]
	if have {
		for row := 0; row < 2; row++ {
			if !p.valid || p.shown[row] != want[row] {
				out = append(out, p.cfg.Protocol.Line(row, want[row])...)
			}
		}
		p.shown, p.valid = want, true
	}
	if bells {
		for ; rings > 0; rings-- {
			out = append(out, p.cfg.Protocol.Bell()...)
		}
	}
	return out
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
		// The deadline is this write's only: once past, it would also
		// refuse Show's direct writes, which never wait anyway.
		return dev.SetWriteDeadline(time.Time{})
	}
	p.wmu.Lock()
	// A new connection: the display is reset and every line redrawn; what
	// a direct write left over belonged to the old one.
	p.valid, p.tail = false, p.tail[:0]
	err = write(p.cfg.Protocol.Init())
	if err == nil {
		p.live = nonBlocking(dev)
	}
	p.wmu.Unlock()
	if err != nil {
		return fmt.Errorf("initialise display: %w", err)
	}
	defer func() {
		p.wmu.Lock()
		p.live = nil
		p.wmu.Unlock()
	}()
	up()
	var out []byte
	for {
		// One write per wake-up: the changed lines and any bells go to the
		// device together (one syscall, and the screen changes at once).
		p.wmu.Lock()
		out = p.compose(out[:0], true)
		var err error
		if len(out) > 0 {
			err = write(out)
		}
		p.wmu.Unlock()
		if err != nil {
			return err
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
