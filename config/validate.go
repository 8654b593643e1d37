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

// Validate checks every value and returns all problems at once.
func (c *Config) Validate() error {
	var errs Errors
	bad := func(key, format string, args ...any) {
		errs = append(errs, &Error{Key: key, Msg: fmt.Sprintf(format, args...)})
	}
	t := c.Terminal
	for _, err := range payment.CheckLane(t.ID, t.Currency, t.MaxAmount) {
		var le *payment.LaneError
		if errors.As(err, &le) {
			bad(laneKeys[le.Field], "%s", le.Msg)
		} else {
			bad("terminal", "%v", err)
		}
	}
	if t.CodeTimeout.Duration < 5*time.Second {
		bad("terminal.code_timeout", "%s is too short to scan a code (at least 5s)", t.CodeTimeout.Duration)
	}
	if t.ResultTime.Duration < time.Second {
		bad("terminal.result_time", "%s is too short to read the result (at least 1s)", t.ResultTime.Duration)
	}

	g := c.Gateway
	if u, err := url.Parse(g.URL); err != nil || u.Host == "" || (u.Scheme != "https" && u.Scheme != "http") {
		bad("gateway.url", "%q is not a URL like https://api.iotpaycloud.com", g.URL)
	} else if u.Scheme == "http" && !isLoopback(u.Hostname()) {
		bad("gateway.url", "%q must use https (plain http only to this machine, for the simulator)", g.URL)
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
		bad("gateway.timeout", "%s must be between 1s and 2m", g.Timeout.Duration)
	}
	if g.PollInterval.Duration < 100*time.Millisecond || g.PollInterval.Duration > time.Minute {
		bad("gateway.poll_interval", "%s must be between 100ms and 1m", g.PollInterval.Duration)
	}
	if g.PollAttempts < 1 || g.PollAttempts > 1000 {
		bad("gateway.poll_attempts", "%d must be 1–1000", g.PollAttempts)
	}
	if g.ReconcileFor.Duration < time.Minute {
		bad("gateway.reconcile_for", "%s must be at least 1m", g.ReconcileFor.Duration)
	}
	if g.ClientIP != "" && net.ParseIP(g.ClientIP) == nil {
		bad("gateway.client_ip", "%q is not an IP address", g.ClientIP)
	}
	if g.SaleLimit.Duration < g.Timeout.Duration || g.SaleLimit.Duration > time.Hour {
		bad("gateway.sale_limit", "%s must be at least gateway.timeout (%s) and at most 1h", g.SaleLimit.Duration, g.Timeout.Duration)
	}
	if c.ECR != nil {
		// The longest a sale can take: the cap, or the polling itself when
		// it ends first (create + every query timing out, with the waits).
		if longest := SaleDuration(g); longest > 110*time.Second {
			bad("gateway.sale_limit", "a sale can take %s (the smaller of sale_limit and timeout + poll_attempts × (poll_interval + timeout)); a cash register gives up after about 120 s: keep it at most 110s", longest)
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
				bad("scanner.vendor_product", "%v", err)
			}
		}
		for _, term := range s.Terminators {
			if _, ok := Terminators[term]; !ok {
				bad("scanner.terminators", "%q must be enter, kpenter or tab", term)
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
			bad("scanner.line_ending", "%q must be auto, cr, lf or crlf", s.LineEnding)
		}
	default:
		bad("scanner.driver", "%q must be evdev (USB HID scanner) or serial", s.Driver)
	}
	if s.IdleTimeout.Duration <= 0 || s.IdleTimeout.Duration > 5*time.Second {
		bad("scanner.idle_timeout", "%s must be between 1ms and 5s", s.IdleTimeout.Duration)
	}
	if s.MaxLength < 8 || s.MaxLength > 256 {
		bad("scanner.max_length", "%d must be 8–256", s.MaxLength)
	}
	if len(c.Wallets) > 0 {
		if _, err := payment.NewWallets(c.WalletRules()); err != nil {
			bad("wallet", "%v", err)
		}
	}

	if k := c.Keypad; k != nil {
		if k.Device == "" && k.Name == "" && k.VendorProduct == "" {
			bad("keypad.device", "missing: give the keypad's /dev/input/by-id/… path, or keypad.name or keypad.vendor_product (or remove [keypad])")
		}
		if k.MaxDigits < 1 || k.MaxDigits > 8 {
			bad("keypad.max_digits", "%d must be 1–8", k.MaxDigits)
		}
	}

	if e := c.ECR; e != nil {
		if e.Protocol != "concert" {
			bad("ecr.protocol", "%q: only concert is supported", e.Protocol)
		}
		switch {
		case (e.Device == "") == (e.Listen == ""):
			bad("ecr.device", "give exactly one of ecr.device (serial port) and ecr.listen (TCP address)")
		case e.Device != "":
			checkPort(bad, "ecr", e.Baud, e.DataBits, e.Parity)
		default:
			if _, _, err := net.SplitHostPort(e.Listen); err != nil {
				bad("ecr.listen", "%q is not host:port like 127.0.0.1:8800", e.Listen)
			}
		}
		if e.POSNumber != "" && !posNumber.MatchString(e.POSNumber) {
			bad("ecr.pos_number", "%q must be two digits 01–99", e.POSNumber)
		}
		if e.Timeout.Duration < 100*time.Millisecond || e.Timeout.Duration > 30*time.Second {
			bad("ecr.timeout", "%s must be between 100ms and 30s", e.Timeout.Duration)
		}
		if e.KeepResults.Duration < time.Minute || e.KeepResults.Duration > 24*time.Hour {
			bad("ecr.keep_results", "%s must be between 1m and 24h", e.KeepResults.Duration)
		}
		if e.IdleTimeout.Duration < time.Second || e.IdleTimeout.Duration > 24*time.Hour {
			bad("ecr.idle_timeout", "%s must be between 1s and 24h", e.IdleTimeout.Duration)
		}
		if e.RefundWindow.Duration < time.Minute || e.RefundWindow.Duration > 24*time.Hour {
			bad("ecr.refund_window", "%s must be between 1m and 24h", e.RefundWindow.Duration)
		}
		for _, a := range e.AllowFrom {
			if _, err := ParseNetwork(a); err != nil {
				bad("ecr.allow_from", "%q is not an address or network like 192.168.1.20 or 192.168.1.0/24", a)
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
		bad("display.driver", "%q must be %s", d.Driver, oneOf(DisplayDrivers))
	}
	if d.Width < 8 || d.Width > 40 {
		bad("display.width", "%d must be 8–40 characters", d.Width)
	}
	if d.Brightness < 0 || d.Brightness > 4 {
		bad("display.brightness", "%d must be 1–4 (0 leaves it as it is)", d.Brightness)
	}

	if b := c.Beeper; b != nil {
		switch b.Driver {
		case BeeperGPIO:
			if b.Chip == "" {
				bad("beeper.chip", "missing: the GPIO chip's label (e.g. pinctrl-bcm2711) or name (gpiochip0)")
			}
			if b.Line < 0 || b.Line > 511 {
				bad("beeper.line", "%d is not a GPIO line offset", b.Line)
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
			bad("beeper.driver", "%q must be %s", b.Driver, oneOf(BeeperDrivers))
		}
	}

	if c.Journal.Path == "" {
		bad("journal.path", "missing: where the order journal lives (/var/lib/scanpay/journal.db)")
	}
	if m := c.Metrics; m != nil && m.Listen != "" {
		if _, _, err := net.SplitHostPort(m.Listen); err != nil {
			bad("metrics.listen", "%q is not host:port like 127.0.0.1:9464", m.Listen)
		}
	}
	if c.Fleet != nil {
		c.Fleet.validate(bad)
	}
	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		bad("log.level", "%q must be debug, info, warn or error", c.Log.Level)
	}
	switch c.Log.Format {
	case "json", "console":
	default:
		bad("log.format", "%q must be json or console", c.Log.Format)
	}
	if len(errs) > 0 {
		return errs
	}
	return nil
}

// portKeys maps a port setting to its key in a section.
var portKeys = map[serial.Field]string{serial.FieldBaud: "baud", serial.FieldDataBits: "data_bits", serial.FieldParity: "parity"}

func checkPort(bad func(string, string, ...any), section string, baud, bits int, parity string) {
	err := serial.PortConfig{Path: "x", Baud: baud, DataBits: bits, Parity: parity}.Validate()
	if err == nil {
		return
	}
	key := section + ".baud"
	var fe *serial.FieldError
	if errors.As(err, &fe) && portKeys[fe.Field] != "" {
		key = section + "." + portKeys[fe.Field]
	}
	bad(key, "%v", err)
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
			w = append(w, fmt.Sprintf("ecr.listen %q listens on every network interface: only ecr.allow_from %v may connect, but a register on the shop's LAN is usually better given its own address", e.Listen, e.AllowFrom))
		}
	}
	if m := c.Metrics; m != nil && m.Listen != "" {
		host, _, err := net.SplitHostPort(m.Listen)
		if err == nil && (host == "" || host == "0.0.0.0" || host == "::") {
			w = append(w, fmt.Sprintf("metrics.listen %q listens on every network interface", m.Listen))
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
			errs = append(errs, &Error{Key: key, Msg: path + " does not exist (unplugged, or a wrong name? see ls /dev/input/by-id /dev/serial/by-id)"})
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
			errs = append(errs, &Error{Key: "journal.path", Msg: dir + " is not a directory"})
		}
	}
	return errs
}
