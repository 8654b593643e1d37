package config

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/scanpay/scanpay/device/input"
	"github.com/scanpay/scanpay/device/serial"
	"github.com/scanpay/scanpay/payment"
	"github.com/scanpay/scanpay/scanner"
)

var posNumber = regexp.MustCompile(`^(0[1-9]|[1-9][0-9])$`)

// laneKeys files the engine's lane rules under their keys.
var laneKeys = map[payment.LaneField]string{
	payment.FieldTerminalID: "terminal.id", payment.FieldCurrency: "terminal.currency", payment.FieldMaxAmount: "terminal.max_amount",
}

// laneMessages say what each lane setting must be, without its value.
var laneMessages = map[payment.LaneField]string{
	payment.FieldTerminalID: "must be 1–12 letters, digits or _ (it starts every order number)",
	payment.FieldCurrency:   "must be CAD or USD",
	payment.FieldMaxAmount:  fmt.Sprintf("must be 1–%d cents", payment.MaxAmountLimit),
}

// Validate checks every value and returns all problems at once.
func (c *Config) Validate() error {
	var errs Errors
	bad := func(key, format string, args ...any) {
		errs = append(errs, &Error{Key: key, Msg: fmt.Sprintf(format, args...)})
	}
	t := c.Terminal
	// The engine's messages quote the value; config says its own.
	for _, err := range payment.CheckLane(t.ID, t.Currency, t.MaxAmount) {
		var le *payment.LaneError
		if errors.As(err, &le) && laneMessages[le.Field] != "" {
			bad(laneKeys[le.Field], "%s", laneMessages[le.Field])
		} else {
			bad("terminal", "the lane settings are not valid")
		}
	}
	if t.CodeTimeout.Duration < 5*time.Second {
		bad("terminal.code_timeout", "too short to scan a code (at least 5s)")
	}
	if t.ResultTime.Duration < time.Second {
		bad("terminal.result_time", "too short to read the result (at least 1s)")
	}

	g := c.Gateway
	if u, err := url.Parse(g.URL); err != nil || u.Host == "" || (u.Scheme != "https" && u.Scheme != "http") {
		bad("gateway.url", "not a URL like https://api.iotpaycloud.com")
	} else if u.Scheme == "http" && !isLoopback(u.Hostname()) {
		bad("gateway.url", "must use https (plain http only to this machine, for the simulator)")
	}
	if g.MchID == "" {
		bad("gateway.mch_id", "missing: the merchant id IOTPay gave you")
	}
	if g.JobNo == "" {
		bad("gateway.job_no", "missing: the merchant login name IOTPay gave you")
	}
	if len(g.Subject) == 0 || len(g.Subject) > 64 {
		bad("gateway.subject", "must be 1–64 characters")
	}
	if len(g.Body) == 0 || len(g.Body) > 255 {
		bad("gateway.body", "must be 1–255 characters")
	}
	if g.Timeout.Duration < time.Second || g.Timeout.Duration > 2*time.Minute {
		bad("gateway.timeout", "must be between 1s and 2m")
	}
	if g.PollInterval.Duration < 100*time.Millisecond || g.PollInterval.Duration > time.Minute {
		bad("gateway.poll_interval", "must be between 100ms and 1m")
	}
	if g.PollAttempts < 1 || g.PollAttempts > 1000 {
		bad("gateway.poll_attempts", "must be 1–1000")
	}
	if g.ReconcileFor.Duration < time.Minute {
		bad("gateway.reconcile_for", "must be at least 1m")
	}
	if g.ClientIP != "" && net.ParseIP(g.ClientIP) == nil {
		bad("gateway.client_ip", "not an IP address")
	}
	if g.SaleLimit.Duration < g.Timeout.Duration || g.SaleLimit.Duration > time.Hour {
		bad("gateway.sale_limit", "must be at least gateway.timeout and at most 1h")
	}
	if c.ECR != nil {
		// The longest a sale can take: the cap, or the polling itself when
		// it ends first (create + every query timing out, with the waits).
		if SaleDuration(g) > 110*time.Second {
			bad("gateway.sale_limit", "a sale can take longer than 110s (the smaller of sale_limit and timeout + poll_attempts × (poll_interval + timeout)); a cash register gives up after about 120 s: keep it at most 110s")
		}
	}

	s := c.Scanner
	switch s.Driver {
	case "evdev":
		if s.Device == "" && s.Name == "" && s.VendorProduct == "" {
			bad("scanner.device", "missing: give the device path (/dev/input/by-id/…-event-kbd), or scanner.name or scanner.vendor_product")
		}
		if s.VendorProduct != "" {
			if err := (input.DeviceSpec{VendorProduct: s.VendorProduct}).Validate(); err != nil {
				bad("scanner.vendor_product", "must be two hex numbers like 0c2e:0b61")
			}
		}
		for _, term := range s.Terminators {
			if _, ok := Terminators[term]; !ok {
				bad("scanner.terminators", "each must be enter, kpenter or tab")
			}
		}
		if len(s.Terminators) == 0 {
			bad("scanner.terminators", "at least one of enter, kpenter, tab")
		}
	case "serial":
		if s.Device == "" {
			bad("scanner.device", "missing: the serial port, e.g. /dev/serial/by-id/usb-…")
		}
		checkPort(bad, "scanner", s.Baud, s.DataBits, s.Parity)
		if _, err := scanner.NewFramer(scanner.FramerConfig{Terminator: s.LineEnding}); err != nil {
			bad("scanner.line_ending", "must be auto, cr, lf or crlf")
		}
	default:
		bad("scanner.driver", "must be evdev (USB HID scanner) or serial")
	}
	if s.IdleTimeout.Duration <= 0 || s.IdleTimeout.Duration > 5*time.Second {
		bad("scanner.idle_timeout", "must be between 1ms and 5s")
	}
	if s.MaxLength < 8 || s.MaxLength > 256 {
		bad("scanner.max_length", "must be 8–256")
	}
	// The engine's wallet messages quote names and prefixes: check each
	// row on its own and say which one.
	for i, r := range c.WalletRules()[:len(c.Wallets)] {
		if _, err := payment.NewWallets([]payment.WalletRule{r}); err != nil {
			bad("wallet", "row %d is not valid: it needs a channel, prefixes of digits or ranges of one width like 10-15, and min_length ≤ max_length within 1–64", i+1)
		}
	}

	if k := c.Keypad; k != nil {
		if k.Device == "" && k.Name == "" && k.VendorProduct == "" {
			bad("keypad.device", "missing: give the keypad's /dev/input/by-id/… path, or keypad.name or keypad.vendor_product (or remove [keypad])")
		}
		if k.MaxDigits < 1 || k.MaxDigits > 8 {
			bad("keypad.max_digits", "must be 1–8")
		}
	}

	if e := c.ECR; e != nil {
		if e.Protocol != "concert" {
			bad("ecr.protocol", "only concert is supported")
		}
		switch {
		case (e.Device == "") == (e.Listen == ""):
			bad("ecr.device", "give exactly one of ecr.device (serial port) and ecr.listen (TCP address)")
		case e.Device != "":
			checkPort(bad, "ecr", e.Baud, e.DataBits, e.Parity)
		default:
			if _, _, err := net.SplitHostPort(e.Listen); err != nil {
				bad("ecr.listen", "not host:port like 127.0.0.1:8800")
			}
		}
		if e.POSNumber != "" && !posNumber.MatchString(e.POSNumber) {
			bad("ecr.pos_number", "must be two digits 01–99")
		}
		if e.Timeout.Duration < 100*time.Millisecond || e.Timeout.Duration > 30*time.Second {
			bad("ecr.timeout", "must be between 100ms and 30s")
		}
		if e.KeepResults.Duration < time.Minute || e.KeepResults.Duration > 24*time.Hour {
			bad("ecr.keep_results", "must be between 1m and 24h")
		}
		if e.IdleTimeout.Duration < time.Second || e.IdleTimeout.Duration > 24*time.Hour {
			bad("ecr.idle_timeout", "must be between 1s and 24h")
		}
		if e.RefundWindow.Duration < time.Minute || e.RefundWindow.Duration > 24*time.Hour {
			bad("ecr.refund_window", "must be between 1m and 24h")
		}
		for i, a := range e.AllowFrom {
			if _, err := ParseNetwork(a); err != nil {
				bad("ecr.allow_from", "entry %d is not an address or network like 192.168.1.20 or 192.168.1.0/24", i+1)
			}
		}
	}

	d := c.Display
	switch {
	case d.Line():
		if d.Device == "" {
			bad("display.device", "missing: the display's serial port")
		}
		checkPort(bad, "display", d.Baud, 8, "none")
	case !slices.Contains(DisplayDrivers, d.Driver):
		bad("display.driver", "must be %s", oneOf(DisplayDrivers))
	}
	if d.Width < 8 || d.Width > 40 {
		bad("display.width", "must be 8–40 characters")
	}
	if d.Brightness < 0 || d.Brightness > 4 {
		bad("display.brightness", "must be 1–4 (0 leaves it as it is)")
	}

	if b := c.Beeper; b != nil {
		switch b.Driver {
		case BeeperGPIO:
			if b.Chip == "" {
				bad("beeper.chip", "missing: the GPIO chip's label (e.g. pinctrl-bcm2711) or name (gpiochip0)")
			}
			if b.Line < 0 || b.Line > 511 {
				bad("beeper.line", "not a GPIO line offset (0–511)")
			}
		case BeeperTone:
			if b.Device == "" {
				bad("beeper.device", "missing: the tone device, e.g. /dev/input/by-path/platform-pwm-beeper-event")
			}
		case BeeperBell:
			if !d.Line() {
				bad("beeper.driver", "bell rings the line display: it needs display.driver %s", oneOf(serialDisplays))
			}
		case BeeperNone:
		default:
			bad("beeper.driver", "must be %s", oneOf(BeeperDrivers))
		}
	}

	if c.Journal.Path == "" {
		bad("journal.path", "missing: where the order journal lives (/var/lib/scanpay/journal.db)")
	}
	if m := c.Metrics; m != nil && m.Listen != "" {
		if _, _, err := net.SplitHostPort(m.Listen); err != nil {
			bad("metrics.listen", "not host:port like 127.0.0.1:9464")
		}
	}
	if c.Fleet != nil {
		c.Fleet.validate(bad)
	}
	c.Log.validate(bad)
	if len(errs) > 0 {
		return errs
	}
	return nil
}

// portKeys maps a port setting to its key in a section.
var portKeys = map[serial.Field]string{serial.FieldBaud: "baud", serial.FieldDataBits: "data_bits", serial.FieldParity: "parity"}

// portMessages say what a port setting must be, without its value.
var portMessages = map[serial.Field]string{
	serial.FieldBaud: "not a standard rate (1200–115200)", serial.FieldDataBits: "must be 7 or 8", serial.FieldParity: "must be none, even or odd",
}

func checkPort(bad func(string, string, ...any), section string, baud, bits int, parity string) {
	err := serial.PortConfig{Path: "x", Baud: baud, DataBits: bits, Parity: parity}.Validate()
	if err == nil {
		return
	}
	// The port's messages quote the value; config says its own.
	key, msg := section+".baud", "not a valid port setting"
	var fe *serial.FieldError
	if errors.As(err, &fe) && portKeys[fe.Field] != "" {
		key, msg = section+"."+portKeys[fe.Field], portMessages[fe.Field]
	}
	bad(key, "%s", msg)
}

// SaleDuration is the longest a sale's gateway phase can last: the cap,
// or the polling itself when it ends first (create_order and every query
// running into the timeout, with the waits between queries).
func SaleDuration(g Gateway) time.Duration {
	polling := g.Timeout.Duration + time.Duration(g.PollAttempts)*(g.PollInterval.Duration+g.Timeout.Duration)
	return min(g.SaleLimit.Duration, polling)
}

// ParseNetwork reads an allow_from entry: an address (one host) or a
// network in CIDR form.
func ParseNetwork(s string) (netip.Prefix, error) {
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(strings.TrimSpace(s))
		if err != nil {
			return netip.Prefix{}, err
		}
		return p.Masked(), nil
	}
	a, err := netip.ParseAddr(strings.TrimSpace(s))
	if err != nil {
		return netip.Prefix{}, err
	}
	return netip.PrefixFrom(a, a.BitLen()), nil
}

// Warnings are settings that work but deserve a second look; check-config
// prints them.
func (c *Config) Warnings() []string {
	var w []string
	if e := c.ECR; e != nil && e.Listen != "" {
		host, _, err := net.SplitHostPort(e.Listen)
		if err == nil && (host == "" || host == "0.0.0.0" || host == "::") {
			w = append(w, "ecr.listen listens on every network interface: only ecr.allow_from may connect, but a register on the shop's LAN is usually better given its own address")
		}
	}
	if m := c.Metrics; m != nil && m.Listen != "" {
		host, _, err := net.SplitHostPort(m.Listen)
		if err == nil && (host == "" || host == "0.0.0.0" || host == "::") {
			w = append(w, "metrics.listen listens on every network interface: anyone on the LAN can read the lane's metrics")
		}
	}
	if !c.Terminal.RequireClockSync {
		w = append(w, "terminal.require_clock_sync is off: sales start even if the clock is wrong (order times and reports follow it)")
	}
	return w
}

// oneOf lists names for a message: "a, b, c or d".
func oneOf(names []string) string {
	if len(names) < 2 {
		return strings.Join(names, "")
	}
	return strings.Join(names[:len(names)-1], ", ") + " or " + names[len(names)-1]
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// Terminators maps terminator names to key codes.
var Terminators = map[string]uint16{"enter": input.KeyEnter, "kpenter": input.KeyKPEnter, "tab": input.KeyTab}

// WalletRules is the wallet table: the configured rows, or the default.
func (c *Config) WalletRules() []payment.WalletRule {
	if len(c.Wallets) == 0 {
		return payment.DefaultWalletRules()
	}
	out := make([]payment.WalletRule, len(c.Wallets))
	for i, w := range c.Wallets {
		out[i] = payment.WalletRule{Name: w.Name, Channel: w.Channel, Prefixes: w.Prefixes, MinLen: w.MinLength, MaxLen: w.MaxLength}
	}
	return out
}

// CheckDevices reports configured device files that do not exist. The
// daemon starts anyway (it retries unplugged devices); check-config fails.
func (c *Config) CheckDevices() Errors {
	var errs Errors
	check := func(key, path string) {
		if path == "" {
			return
		}
		if _, err := os.Stat(path); err != nil {
			errs = append(errs, &Error{Key: key, Msg: "the device does not exist (unplugged, or a wrong name? see ls /dev/input/by-id /dev/serial/by-id)"})
		}
	}
	check("scanner.device", c.Scanner.Device)
	if c.Keypad != nil {
		check("keypad.device", c.Keypad.Device)
	}
	if c.ECR != nil {
		check("ecr.device", c.ECR.Device)
	}
	if c.Display.Line() {
		check("display.device", c.Display.Device)
	}
	if c.Beeper != nil && c.Beeper.Driver == BeeperTone {
		check("beeper.device", c.Beeper.Device)
	}
	if dir := filepath.Dir(c.Journal.Path); dir != "" {
		if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
			errs = append(errs, &Error{Key: "journal.path", Msg: "its directory does not exist"})
		}
	}
	return errs
}
