// Command fakescanner replays payment codes as a barcode scanner would: as
// a virtual USB keyboard through /dev/uinput, as lines on a serial port or
// pty, or as raw input_event records for decoder tests. Codes come from
// the command line or a replay file, so a checkout session can be scripted.
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/scanpay/scanpay/device/input"
	"github.com/scanpay/scanpay/device/serial"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr))
}

const usage = `Usage: fakescanner (--uinput | --serial PATH | --events FILE) [flags] [CODE...]

Types payment codes as a scanner would. Codes come from the arguments or
from --file, a replay file with one code per line, "pause DURATION" lines
and # comments.

Examples:
  fakescanner --uinput 134567890123456789           # virtual USB keyboard
  fakescanner --serial /dev/pts/3 --line-ending cr 2812345678901234
  fakescanner --events codes.ev --layout 32 --file session.txt

Flags:
`

// step is one line of a replay: a code to type or a pause.
type step struct {
	code  string
	pause time.Duration
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("fakescanner", flag.ContinueOnError)
	fs.SetOutput(stderr)
	useUinput := fs.Bool("uinput", false, "create a virtual USB keyboard through /dev/uinput and type the codes")
	serialPath := fs.String("serial", "", "write the codes to this serial port or pty")
	eventsPath := fs.String("events", "", "write raw input_event records to this file (- for stdout)")
	replay := fs.String("file", "", "replay file: one code per line, 'pause 500ms', # comments")
	keyDelay := fs.Duration("key-delay", 10*time.Millisecond, "time between keys (uinput, events)")
	gap := fs.Duration("gap", 300*time.Millisecond, "pause between codes")
	terminator := fs.String("terminator", "enter", "key that ends a code: enter, kpenter or tab (uinput, events)")
	lineEnding := fs.String("line-ending", "cr", "line ending: cr, lf or crlf (serial)")
	baud := fs.Int("baud", 9600, "baud rate (serial)")
	layout := fs.String("layout", "native", "input_event layout: native, 64 (24-byte) or 32 (16-byte) (events)")
	name := fs.String("name", "scanpay fake scanner", "device name (uinput)")
	id := fs.String("id", "1eab:8203", "USB vendor:product of the device, in hex (uinput); the default is a Newland scanner, named in scanpay's udev rules")
	settle := fs.Duration("settle", 500*time.Millisecond, "wait after creating the device before typing (uinput)")
	hold := fs.Duration("hold", 0, "keep the device after the last code (uinput)")
	numpad := fs.Bool("numpad", false, "type digits with the numeric keypad's keys, as a USB keypad does (uinput, events)")
	fs.Usage = func() {
		fmt.Fprint(stderr, usage)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	modes := 0
	for _, on := range []bool{*useUinput, *serialPath != "", *eventsPath != ""} {
		if on {
			modes++
		}
	}
	if modes != 1 {
		fmt.Fprintln(stderr, "fakescanner: choose exactly one of --uinput, --serial, --events")
		fs.Usage()
		return 2
	}
	steps, err := loadSteps(fs.Args(), *replay)
	if err != nil {
		fmt.Fprintln(stderr, "fakescanner:", err)
		return 2
	}
	vendor, product, err := input.ParseVendorProduct(*id)
	if err != nil {
		fmt.Fprintln(stderr, "fakescanner: --id:", err)
		return 2
	}
	termKey, err := parseTerminator(*terminator)
	if err != nil {
		fmt.Fprintln(stderr, "fakescanner:", err)
		return 2
	}
	for _, s := range steps {
		if s.code == "" {
			continue
		}
		if _, err := input.TypeCode(s.code, termKey, time.Time{}, 0); err != nil {
			fmt.Fprintf(stderr, "fakescanner: code %q: %v\n", s.code, err)
			return 2
		}
	}
	switch {
	case *eventsPath != "":
		l, err := input.ParseLayout(*layout)
		if err != nil {
			fmt.Fprintln(stderr, "fakescanner:", err)
			return 2
		}
		err = writeEvents(*eventsPath, stdout, l, steps, typer(*numpad), termKey, *keyDelay, *gap)
		if err != nil {
			fmt.Fprintln(stderr, "fakescanner:", err)
			return 1
		}
	case *serialPath != "":
		ending, ok := map[string]string{"cr": "\r", "lf": "\n", "crlf": "\r\n"}[*lineEnding]
		if !ok {
			fmt.Fprintf(stderr, "fakescanner: line ending %q must be cr, lf or crlf\n", *lineEnding)
			return 2
		}
		if err := writeSerial(ctx, *serialPath, *baud, ending, steps, *gap, stdout); err != nil {
			fmt.Fprintln(stderr, "fakescanner:", err)
			return 1
		}
	default:
		if err := typeUinput(ctx, *name, vendor, product, steps, typer(*numpad), termKey, *keyDelay, *gap, *settle, *hold, stdout); err != nil {
			fmt.Fprintln(stderr, "fakescanner:", err)
			return 1
		}
	}
	return 0
}

// keyTyper turns a code into key events.
type keyTyper func(code string, term uint16, start time.Time, keyDelay time.Duration) ([]input.RawEvent, error)

func typer(numpad bool) keyTyper {
	if numpad {
		return input.TypeKeypad
	}
	return input.TypeCode
}

func parseTerminator(s string) (uint16, error) {
	switch s {
	case "enter":
		return input.KeyEnter, nil
	case "kpenter":
		return input.KeyKPEnter, nil
	case "tab":
		return input.KeyTab, nil
	}
	return 0, fmt.Errorf("terminator %q must be enter, kpenter or tab", s)
}

func loadSteps(args []string, replay string) ([]step, error) {
	var steps []step
	for _, a := range args {
		steps = append(steps, step{code: a})
	}
	if replay != "" {
		f, err := os.Open(replay)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		more, err := parseReplay(f)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", replay, err)
		}
		steps = append(steps, more...)
	}
	if len(steps) == 0 {
		return nil, errors.New("no codes: give them as arguments or with --file")
	}
	return steps, nil
}

// parseReplay reads a replay file.
func parseReplay(r io.Reader) ([]step, error) {
	var steps []step
	sc := bufio.NewScanner(r)
	n := 0
	for sc.Scan() {
		n++
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if rest, ok := strings.CutPrefix(line, "pause "); ok {
			d, err := time.ParseDuration(strings.TrimSpace(rest))
			if err != nil || d < 0 {
				return nil, fmt.Errorf("line %d: pause %q is not a duration like 500ms", n, rest)
			}
			steps = append(steps, step{pause: d})
			continue
		}
		if strings.ContainsAny(line, " \t") {
			return nil, fmt.Errorf("line %d: a code has no spaces (write pauses as 'pause 1s')", n)
		}
		steps = append(steps, step{code: line})
	}
	return steps, sc.Err()
}

func sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

func writeEvents(path string, stdout io.Writer, l input.Layout, steps []step, typeKeys keyTyper, term uint16, keyDelay, gap time.Duration) error {
	w := stdout
	if path != "-" {
		f, err := os.Create(path)
		if err != nil {
			return err
		}
		defer f.Close()
		w = f
	}
	bw := bufio.NewWriter(w)
	// A fixed start keeps recordings reproducible.
	t := time.Unix(1764255600, 0)
	for _, s := range steps {
		if s.code == "" {
			t = t.Add(s.pause)
			continue
		}
		evs, _ := typeKeys(s.code, term, t, keyDelay)
		for _, ev := range evs {
			bw.Write(l.Encode(ev))
		}
		t = evs[len(evs)-1].Time.Add(gap)
	}
	return bw.Flush()
}

func writeSerial(ctx context.Context, path string, baud int, ending string, steps []step, gap time.Duration, stdout io.Writer) error {
	port, err := serial.OpenPort(serial.PortConfig{Path: path, Baud: baud, DataBits: 8, Parity: "none"})
	if err != nil {
		return err
	}
	defer port.Close()
	err = play(ctx, steps, gap, func(code string) error {
		if _, err := io.WriteString(port, code+ending); err != nil {
			return fmt.Errorf("write %s: %w", path, err)
		}
		fmt.Fprintf(stdout, "sent %s\n", mask(code))
		return nil
	})
	if err != nil {
		return err
	}
	return port.Drain()
}

// play runs a replay in real time: pauses as written, gap between codes,
// send for each code.
func play(ctx context.Context, steps []step, gap time.Duration, send func(code string) error) error {
	for i, s := range steps {
		if s.code == "" {
			if err := sleep(ctx, s.pause); err != nil {
				return err
			}
			continue
		}
		if i > 0 {
			if err := sleep(ctx, gap); err != nil {
				return err
			}
		}
		if err := send(s.code); err != nil {
			return err
		}
	}
	return nil
}

func mask(code string) string {
	if len(code) <= 6 {
		return code
	}
	return code[:2] + strings.Repeat("*", len(code)-6) + code[len(code)-4:]
}
