// Package config is scanpay's configuration: the TOML schema with its
// defaults, strict decoding (an unknown or misspelt key is an error naming
// the key and its line), validation with messages a shop technician can
// act on, and loading the merchant key. It declares the display and beeper
// driver names; the rules it shares with other packages (lane rules, port
// settings, the wallet table) it applies from their home packages, filing
// their typed errors under its keys. It hands typed values to the daemon;
// no other package imports it.
package config

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"time"
	"unicode"

	"github.com/BurntSushi/toml"
)

// DefaultPath is where the daemon looks without --config.
const DefaultPath = "/etc/scanpay/scanpay.toml"

// Duration is a time.Duration written as "2s", "100ms", "24h".
type Duration struct{ time.Duration }

// UnmarshalText reads Go duration syntax.
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		// The value is not quoted: messages never echo the file (see Error).
		return errors.New(msgDuration)
	}
	d.Duration = v
	return nil
}

// MarshalText writes Go duration syntax.
func (d Duration) MarshalText() ([]byte, error) { return []byte(d.Duration.String()), nil }

// Config is the whole file.
type Config struct {
	Terminal Terminal `toml:"terminal"`
	Gateway  Gateway  `toml:"gateway"`
	Scanner  Scanner  `toml:"scanner"`
	Wallets  []Wallet `toml:"wallet"`
	Keypad   *Keypad  `toml:"keypad"`
	ECR      *ECR     `toml:"ecr"`
	Display  Display  `toml:"display"`
	Beeper   *Beeper  `toml:"beeper"`
	Journal  Journal  `toml:"journal"`
	Metrics  *Metrics `toml:"metrics"`
	Log      Log      `toml:"log"`
	Fleet    *Fleet   `toml:"fleet"`
}

// Terminal is the lane.
type Terminal struct {
	ID          string   `toml:"id"`
	Currency    string   `toml:"currency"`
	MaxAmount   int64    `toml:"max_amount"`
	CodeTimeout Duration `toml:"code_timeout"`
	ResultTime  Duration `toml:"result_time"`
	// RequireClockSync keeps the lane from taking sales until the system
	// clock is synchronised (systemd-timesyncd, or the kernel's NTP status).
	RequireClockSync bool `toml:"require_clock_sync"`
}

// Gateway is the IOTPay account and polling policy.
type Gateway struct {
	URL                  string   `toml:"url"`
	MchID                string   `toml:"mch_id"`
	JobNo                string   `toml:"job_no"`
	KeyFile              string   `toml:"key_file"`
	Subject              string   `toml:"subject"`
	Body                 string   `toml:"body"`
	NotifyURL            string   `toml:"notify_url"`
	ClientIP             string   `toml:"client_ip"`
	Timeout              Duration `toml:"timeout"`
	PollInterval         Duration `toml:"poll_interval"`
	PollAttempts         int      `toml:"poll_attempts"`
	SaleLimit            Duration `toml:"sale_limit"`
	RefundLate           bool     `toml:"refund_late"`
	RequireSignedReplies bool     `toml:"require_signed_replies"`
	ReconcileFor         Duration `toml:"reconcile_for"`
}

// Scanner is the code reader.
type Scanner struct {
	Driver        string   `toml:"driver"` // evdev or serial
	Device        string   `toml:"device"`
	Name          string   `toml:"name"`           // evdev: match by device name
	VendorProduct string   `toml:"vendor_product"` // evdev: match by "0c2e:0b61"
	Baud          int      `toml:"baud"`
	DataBits      int      `toml:"data_bits"`
	Parity        string   `toml:"parity"`
	LineEnding    string   `toml:"line_ending"` // serial: auto, cr, lf, crlf
	Terminators   []string `toml:"terminators"` // evdev: enter, kpenter, tab
	IdleTimeout   Duration `toml:"idle_timeout"`
	MaxLength     int      `toml:"max_length"`
	StripAIM      bool     `toml:"strip_aim"`
}

// Wallet is one row of the code → channel table.
type Wallet struct {
	Name      string   `toml:"name"`
	Channel   string   `toml:"channel"`
	Prefixes  []string `toml:"prefixes"`
	MinLength int      `toml:"min_length"`
	MaxLength int      `toml:"max_length"`
}

// Keypad is the USB numeric keypad.
type Keypad struct {
	Device        string `toml:"device"`
	Name          string `toml:"name"`
	VendorProduct string `toml:"vendor_product"`
	MaxDigits     int    `toml:"max_digits"`
}

// ECR is the cash register link.
type ECR struct {
	Protocol     string   `toml:"protocol"` // concert
	Device       string   `toml:"device"`
	Listen       string   `toml:"listen"`
	Baud         int      `toml:"baud"`
	DataBits     int      `toml:"data_bits"`
	Parity       string   `toml:"parity"`
	POSNumber    string   `toml:"pos_number"`
	AllowRefunds bool     `toml:"allow_refunds"`
	Timeout      Duration `toml:"timeout"`
	KeepResults  Duration `toml:"keep_results"`
	IdleTimeout  Duration `toml:"idle_timeout"`
	AllowFrom    []string `toml:"allow_from"`
	RefundWindow Duration `toml:"refund_window"`
}

// Display drivers: line displays on a serial port, the console, none.
const (
	DisplayEscPos  = "escpos"
	DisplayCD5220  = "cd5220"
	DisplayConsole = "console"
	DisplayNone    = "none"
)

// DisplayDrivers lists every display driver; the line displays first.
var DisplayDrivers = []string{DisplayEscPos, DisplayCD5220, DisplayConsole, DisplayNone}

// serialDisplays are the drivers that draw on a line display at
// display.device.
var serialDisplays = DisplayDrivers[:2]

// Display is the customer line display.
type Display struct {
	Driver     string `toml:"driver"` // one of DisplayDrivers
	Device     string `toml:"device"`
	Baud       int    `toml:"baud"`
	Width      int    `toml:"width"`
	Brightness int    `toml:"brightness"`
}

// Line reports whether the driver draws on a line display on a serial
// port (display.device).
func (d Display) Line() bool { return slices.Contains(serialDisplays, d.Driver) }

// Beeper drivers: a GPIO buzzer, an evdev tone device, the line display's
// bell, none.
const (
	BeeperGPIO = "gpio"
	BeeperTone = "tone"
	BeeperBell = "bell"
	BeeperNone = "none"
)

// BeeperDrivers lists every beeper driver.
var BeeperDrivers = []string{BeeperGPIO, BeeperTone, BeeperBell, BeeperNone}

// Beeper is the buzzer.
type Beeper struct {
	Driver    string `toml:"driver"` // one of BeeperDrivers
	Chip      string `toml:"chip"`
	Line      int    `toml:"line"`
	ActiveLow bool   `toml:"active_low"`
	Device    string `toml:"device"`
}

// Journal is the order journal.
type Journal struct {
	Path string `toml:"path"`
}

// Metrics is the Prometheus endpoint.
type Metrics struct {
	Listen string `toml:"listen"`
}

// Log is logging.
type Log struct {
	Level  string `toml:"level"`  // debug, info, warn, error
	Format string `toml:"format"` // json, console
}

// validate checks the [log] table; the lane's and head office's configs share it.
func (l Log) validate(bad func(string, string, ...any)) {
	switch l.Level {
	case "debug", "info", "warn", "error":
	default:
		bad("log.level", "must be debug, info, warn or error")
	}
	switch l.Format {
	case "json", "console":
	default:
		bad("log.format", "must be json or console")
	}
}

// Default returns the defaults every key falls back to.
func Default() Config {
	return Config{
		Terminal: Terminal{ID: "LANE1", Currency: "CAD", MaxAmount: 100000, CodeTimeout: Duration{2 * time.Minute}, ResultTime: Duration{8 * time.Second},
			RequireClockSync: true},
		// refund_late is on: a late payment is a customer who was told "not
		// confirmed" and most likely paid again another way; their money
		// goes back without waiting for someone to notice.
		Gateway: Gateway{URL: "https://api.iotpaycloud.com", Subject: "scanpay", Body: "In-store purchase",
			NotifyURL: "https://localhost/unused", Timeout: Duration{30 * time.Second}, PollInterval: Duration{2 * time.Second},
			PollAttempts: 30, SaleLimit: Duration{90 * time.Second}, RefundLate: true, RequireSignedReplies: true, ReconcileFor: Duration{24 * time.Hour}},
		Scanner: Scanner{Driver: "evdev", Baud: 9600, DataBits: 8, Parity: "none", LineEnding: "auto",
			Terminators: []string{"enter", "kpenter"}, IdleTimeout: Duration{300 * time.Millisecond}, MaxLength: 64},
		Display: Display{Driver: DisplayNone, Baud: 9600, Width: 20},
		Journal: Journal{Path: "/var/lib/scanpay/journal.db"},
		Log:     Log{Level: "info", Format: "json"},
	}
}

// Error is a configuration problem, located when it can be. Its message
// names the key and the line but never quotes a value from the file, so
// that "sudo scanpay check-config --config <some root-only file>" tells
// nothing about that file but where it is not a scanpay config.
type Error struct {
	Key  string // dotted key, e.g. scanner.device
	Line int    // 1-based, 0 when unknown
	Msg  string
}

func (e *Error) Error() string {
	switch {
	case e.Key != "" && e.Line > 0:
		return fmt.Sprintf("%s (line %d): %s", e.Key, e.Line, e.Msg)
	case e.Key != "":
		return e.Key + ": " + e.Msg
	case e.Line > 0:
		return fmt.Sprintf("line %d: %s", e.Line, e.Msg)
	}
	return e.Msg
}

// Errors is every problem found, so a technician fixes them in one go.
type Errors []*Error

func (es Errors) Error() string {
	lines := make([]string, len(es))
	for i, e := range es {
		lines[i] = e.Error()
	}
	return strings.Join(lines, "\n")
}

// MaxSize is the largest config file scanpay reads: the example with
// every key commented is 12 kB, so a file this large is the wrong file.
const MaxSize = 1 << 20

// maxUnknownReported caps the unknown keys listed one by one.
const maxUnknownReported = 20

// Messages of our own that the TOML decoder hands back inside its errors.
const (
	msgDuration = `not a duration like "2s" or "500ms"`
)

// Parse decodes a config file's bytes over the defaults. Unknown keys are
// errors; so is every value Validate refuses.
func Parse(data []byte) (Config, error) { return parse(context.Background(), data) }

// parse is Parse that stops when ctx ends (SIGTERM during a large file).
// Every step is linear in the file's size, which MaxSize bounds.
func parse(ctx context.Context, data []byte) (Config, error) {
	cfg := Default()
	if len(data) > MaxSize {
		return cfg, Errors{{Msg: tooLarge(int64(len(data)))}}
	}
	// Section defaults for optional tables are filled after decoding.
	md, err := toml.NewDecoder(bytes.NewReader(data)).Decode(&cfg)
	if err != nil {
		return cfg, Errors{decodeProblem(err)}
	}
	if err := ctx.Err(); err != nil {
		return cfg, fmt.Errorf("config parsing interrupted: %w", err)
	}
	errs, err := unknownKeys(ctx, md, data, "a scanpay setting")
	if err != nil {
		return cfg, err
	}
	if len(errs) > 0 {
		return cfg, errs
	}
	cfg.fillOptionalDefaults()
	if err := cfg.Validate(); err != nil {
		return cfg, err
	}
	return cfg, nil
}

// unknownKeys reports the keys the decoder did not use, each with its
// line, the first maxUnknownReported of them and then a count; a key
// inside an unknown table already reported is not news. Linear in the
// file: one index of its lines, and a lookup of each key's parents.
func unknownKeys(ctx context.Context, md toml.MetaData, data []byte, what string) (Errors, error) {
	var errs Errors
	reported := map[string]bool{}
	lines := indexLines(data)
	unknown := 0
	for i, k := range md.Undecoded() {
		if i%4096 == 0 {
			if err := ctx.Err(); err != nil {
				return nil, fmt.Errorf("config parsing interrupted: %w", err)
			}
		}
		inside := false
		for n := 1; n < len(k) && !inside; n++ {
			inside = reported[k[:n].String()]
		}
		if inside {
			continue
		}
		key := k.String()
		reported[key] = true
		unknown++
		if unknown > maxUnknownReported {
			continue
		}
		errs = append(errs, &Error{Key: safeKey(key), Line: lines.find(k), Msg: "unknown key (misspelt, or not " + what + ")"})
	}
	if unknown > maxUnknownReported {
		errs = append(errs, &Error{Msg: fmt.Sprintf("… and %d more unknown keys", unknown-maxUnknownReported)})
	}
	return errs, nil
}

func tooLarge(n int64) string {
	return fmt.Sprintf("the file is %d bytes; a scanpay config is at most %d (1 MiB): is it the right file?", n, MaxSize)
}

// decodeProblem turns a decoder error into one that names the line and
// the key but quotes nothing from the file: the decoder's own messages
// quote the text they stumbled on.
func decodeProblem(err error) *Error {
	var pe toml.ParseError
	if !errors.As(err, &pe) {
		// Type mismatches ("incompatible types: TOML value has type string;
		// destination has type integer") name types and known keys only.
		return &Error{Msg: strings.TrimPrefix(err.Error(), "toml: ")}
	}
	switch {
	case pe.Message == msgDuration:
		return &Error{Key: safeKey(pe.LastKey), Line: pe.Position.Line, Msg: msgDuration}
	case strings.Contains(pe.Message, "out of range"):
		return &Error{Key: safeKey(pe.LastKey), Line: pe.Position.Line, Msg: "the number is out of range"}
	}
	return &Error{Line: pe.Position.Line, Msg: fmt.Sprintf("column %d: not valid TOML (check the quotes, brackets and = on this line)", pe.Position.Col)}
}

// safeKey makes a key from the file fit for a message: printable, and
// short enough that a key cannot carry a file's content.
func safeKey(k string) string {
	const max = 64
	k = strings.Map(func(r rune) rune {
		if unicode.IsPrint(r) {
			return r
		}
		return '?'
	}, k)
	if r := []rune(k); len(r) > max {
		k = string(r[:max]) + "…"
	}
	return k
}

// Load reads and parses a config file. It refuses a file larger than
// MaxSize without reading it all, and anything but a regular file (a FIFO
// would block, a device never end); ctx interrupts it.
func Load(ctx context.Context, path string) (Config, error) {
	data, err := readConfig(path)
	if err != nil {
		return Config{}, err
	}
	cfg, err := parse(ctx, data)
	if err != nil {
		return cfg, fmt.Errorf("config %s:\n%w", path, err)
	}
	return cfg, nil
}

func readConfig(path string) ([]byte, error) {
	f, err := openRegular(path)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("read config %s: %w", path, err)
	}
	if fi.Size() > MaxSize {
		return nil, fmt.Errorf("config %s: %s", path, tooLarge(fi.Size()))
	}
	// The size can grow while we read (or lie, on /proc): read one byte
	// past the limit to tell.
	data, err := io.ReadAll(io.LimitReader(f, MaxSize+1))
	if err != nil {
		return nil, fmt.Errorf("read config %s: %w", path, err)
	}
	if len(data) > MaxSize {
		return nil, fmt.Errorf("config %s: %s", path, tooLarge(int64(len(data))))
	}
	return data, nil
}

// errNotRegular: a FIFO, device, socket or directory where a file belongs.
var errNotRegular = errors.New("not a regular file")

// openRegular opens path for reading without blocking on a FIFO or a
// device (O_NONBLOCK) and checks, on the open file, that it is a regular
// file; checking the path first would leave a gap for a swap.
func openRegular(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK|syscall.O_NOCTTY, 0)
	if err != nil {
		return nil, err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		f.Close()
		return nil, &os.PathError{Op: "open", Path: path, Err: fmt.Errorf("%w (%s)", errNotRegular, fileKind(fi.Mode()))}
	}
	return f, nil
}

func fileKind(m os.FileMode) string {
	switch {
	case m&os.ModeNamedPipe != 0:
		return "a FIFO"
	case m&os.ModeCharDevice != 0:
		return "a character device"
	case m&os.ModeDevice != 0:
		return "a block device"
	case m&os.ModeSocket != 0:
		return "a socket"
	case m.IsDir():
		return "a directory"
	}
	return "not a plain file"
}

func (c *Config) fillOptionalDefaults() {
	if c.ECR != nil {
		if c.ECR.Protocol == "" {
			c.ECR.Protocol = "concert"
		}
		if c.ECR.Baud == 0 {
			c.ECR.Baud = 9600
		}
		if c.ECR.DataBits == 0 {
			c.ECR.DataBits = 8
		}
		if c.ECR.Parity == "" {
			c.ECR.Parity = "none"
		}
		if c.ECR.Timeout.Duration == 0 {
			c.ECR.Timeout.Duration = 3 * time.Second
		}
		if c.ECR.KeepResults.Duration == 0 {
			c.ECR.KeepResults.Duration = 10 * time.Minute
		}
		if c.ECR.IdleTimeout.Duration == 0 {
			c.ECR.IdleTimeout.Duration = 5 * time.Minute
		}
		if c.ECR.AllowFrom == nil {
			c.ECR.AllowFrom = []string{"127.0.0.1/8", "::1/128"}
		}
		if c.ECR.RefundWindow.Duration == 0 {
			c.ECR.RefundWindow.Duration = 10 * time.Minute
		}
	}
	if c.Keypad != nil && c.Keypad.MaxDigits == 0 {
		c.Keypad.MaxDigits = 8
	}
	if c.Beeper != nil && c.Beeper.Driver == "" {
		c.Beeper.Driver = BeeperNone
	}
	if c.Fleet != nil {
		c.Fleet.fillDefaults()
	}
}

var headerRE = regexp.MustCompile(`^\s*\[\[?\s*([A-Za-z0-9_.\-"]+)\s*\]\]?`)

// lineIndex says where each table header and each key assignment first
// appears, so that every unknown key is located in one pass over the
// file, not one pass per key.
type lineIndex struct {
	headers map[string]int // table name → line
	assigns map[string]int // table name + "\x00" + key → line
}

func indexLines(data []byte) lineIndex {
	ix := lineIndex{headers: map[string]int{}, assigns: map[string]int{}}
	current := ""
	for i, line := range strings.Split(string(data), "\n") {
		trimmed := strings.TrimSpace(line)
		if strings.HasPrefix(trimmed, "[") {
			if m := headerRE.FindStringSubmatch(trimmed); m != nil {
				current = strings.ReplaceAll(m[1], `"`, "")
				if _, ok := ix.headers[current]; !ok {
					ix.headers[current] = i + 1
				}
				continue
			}
		}
		if lhs, _, ok := strings.Cut(trimmed, "="); ok {
			k := current + "\x00" + strings.Trim(strings.TrimSpace(lhs), `"`)
			if _, ok := ix.assigns[k]; !ok {
				ix.assigns[k] = i + 1
			}
		}
	}
	return ix
}

// find is the line of key k: the last segment assigned inside the table
// named by the others, or, for a top-level name, its header or assignment,
// whichever comes first; 0 when not found.
func (ix lineIndex) find(k toml.Key) int {
	if len(k) == 0 {
		return 0
	}
	table := strings.Join(k[:len(k)-1], ".")
	name := k[len(k)-1]
	line := ix.assigns[table+"\x00"+name]
	if len(k) == 1 {
		if h, ok := ix.headers[name]; ok && (line == 0 || h < line) {
			line = h
		}
	}
	return line
}
