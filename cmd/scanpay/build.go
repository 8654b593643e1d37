package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"time"

	"go.uber.org/zap"

	"github.com/scanpay/scanpay/config"
	"github.com/scanpay/scanpay/device"
	"github.com/scanpay/scanpay/device/input"
	"github.com/scanpay/scanpay/device/serial"
	"github.com/scanpay/scanpay/display"
	"github.com/scanpay/scanpay/ecr"
	"github.com/scanpay/scanpay/keypad"
	"github.com/scanpay/scanpay/payment"
	"github.com/scanpay/scanpay/payment/iotpay"
	"github.com/scanpay/scanpay/payment/journal"
	"github.com/scanpay/scanpay/scanner"
)

// build opens the journal and makes every component, one part at a time;
// each part only maps the config onto its package. A journal that cannot
// be opened is a runtime failure; the rest cannot fail after validation,
// except an unusable beeper, which is logged and left silent.
func build(cfg config.Config, key string, log *zap.Logger, o overrides) (_ *daemon, err error) {
	d := &daemon{cfg: cfg, log: log}
	defer func() {
		if err != nil {
			d.close()
		}
	}()
	var devObs device.Observer
	var payObs payment.Observer
	if o.observer != nil {
		devObs, payObs = o.observer, o.observer
	}
	devObs = d.fleetDevices(devObs)
	if err = d.openJournal(o.observer); err != nil {
		return nil, err
	}
	if d.client, err = iotpay.New(gatewayConfig(cfg, key, o.httpClient)); err != nil {
		return nil, err
	}
	wallets, err := payment.NewWallets(cfg.WalletRules())
	if err != nil {
		return nil, err
	}
	screen, pole := d.buildDisplay(o, devObs)
	beeper := d.buildBeeper(pole)
	// The register link comes before the terminal it drives.
	lt := &lateTerminal{}
	results := resultFanout(o.results)
	if d.buildECR(lt, devObs, o.observer) {
		results = append(results, d.link)
	}
	d.term, err = payment.New(engineConfig(cfg), payment.Deps{Gateway: d.client, Journal: d.jr, Wallets: wallets, Screen: screen, Beeper: beeper,
		Results: results, Observer: payObs, Logger: log.Named("lane"), ClockSynced: clockCheck(cfg, o)})
	if err != nil {
		return nil, err
	}
	lt.t = d.term
	if err = d.setupFleet(o); err != nil {
		return nil, err
	}
	d.buildInputs(o, devObs)
	return d, nil
}

// openJournal opens the order journal, timing commits when m is set.
func (d *daemon) openJournal(m *metrics) error {
	// The daemon skips the full integrity read after a clean stop (READY
	// must not wait on a read of the whole file) and runs it in the
	// background instead (integrityRunner).
	opts := journal.Options{TrackCleanStop: true, Exclusive: true}
	if m != nil {
		opts.OnCommit = m.journalCommit
	}
	opts.OnCommit = d.fleetCommit(opts.OnCommit)
	opts.OnCodeFilter = func(codes int, took time.Duration, err error) {
		if err != nil {
			d.log.Warn("used payment codes are checked on disk for now: their in-memory filter did not load (tried again later)", zap.Error(err))
			return
		}
		d.log.Info("used payment codes checked in memory", zap.Int("codes", codes), zap.Duration("loadedIn", took))
	}
	jr, err := journal.Open(d.cfg.Journal.Path, opts)
	if err != nil {
		return err
	}
	d.jr = jr
	d.closers = append(d.closers, func() { jr.Close() })
	if jr.SecretRenewed() {
		d.log.Warn("the code secret beside the journal was missing: a new one was made, so payment codes used before now are not recognised as used (the wallets still refuse a used code)",
			zap.String("secretFile", journal.SecretPath(jr.Path())))
	}
	return nil
}

// gatewayConfig is the gateway client's config for the daemon and the
// operator commands alike, so a refund from the command line identifies
// the lane as a sale from the daemon does. hc nil is the default transport.
func gatewayConfig(cfg config.Config, key string, hc *http.Client) iotpay.Config {
	g := cfg.Gateway
	return iotpay.Config{BaseURL: g.URL, MchID: g.MchID, Key: key, JobNo: g.JobNo, NotifyURL: g.NotifyURL,
		Subject: g.Subject, Body: g.Body, Device: "scanpay", DeviceID: cfg.Terminal.ID, ClientIP: g.ClientIP,
		Timeout: g.Timeout.Duration, RequireSignedReplies: g.RequireSignedReplies, HTTPClient: hc}
}

// engineConfig is the sale engine's policy; the settings that follow from
// the polling policy are derived by payment.
func engineConfig(cfg config.Config) payment.Config {
	t, g := cfg.Terminal, cfg.Gateway
	c := payment.DefaultConfig()
	c.TerminalID, c.Currency, c.MaxAmount = t.ID, t.Currency, t.MaxAmount
	c.PollInterval, c.PollAttempts = g.PollInterval.Duration, g.PollAttempts
	c.CodeTimeout, c.ResultFor = t.CodeTimeout.Duration, t.ResultTime.Duration
	c.RefundLate, c.ReconcileFor = g.RefundLate, g.ReconcileFor.Duration
	c.SaleLimit = g.SaleLimit.Duration
	if cfg.ECR != nil {
		c.RefundWindow = cfg.ECR.RefundWindow.Duration
	}
	return c.Derived()
}

// clockCheck is how the engine learns that the system clock is
// synchronised; nil when the config does not ask it to wait.
func clockCheck(cfg config.Config, o overrides) func() (bool, error) {
	if !cfg.Terminal.RequireClockSync {
		return nil
	}
	if o.clockSynced != nil {
		return o.clockSynced
	}
	return clockSynced
}

// buildDisplay makes the customer display; pole is set when it is a line
// display on a serial port (the bell beeper rings it).
func (d *daemon) buildDisplay(o overrides, obs device.Observer) (payment.ScreenSink, *display.Pole) {
	c := d.cfg.Display
	layout := display.Layout{Width: c.Width}
	switch {
	case o.screen != nil:
		return o.screen, nil
	case c.Line():
		var proto display.Protocol = display.EscPos{Brightness: c.Brightness}
		if c.Driver == config.DisplayCD5220 {
			proto = display.CD5220{Brightness: c.Brightness}
		}
		pole := display.NewPole(display.Config{Protocol: proto, Layout: layout, Logger: d.log.Named("display"), Observer: obs,
			Open: display.SerialOpener(serial.PortConfig{Path: c.Device, Baud: c.Baud, DataBits: 8, Parity: "none"})})
		d.runners = append(d.runners, runner{name: "display", run: pole.Run})
		return pole, pole
	case c.Driver == config.DisplayConsole:
		out := o.consoleOut
		if out == nil {
			out = io.Discard
		}
		return &display.Console{Layout: layout, Out: out}, nil
	}
	return display.None{}, nil
}

// buildBeeper makes the beeper. One that cannot be opened is logged and
// the lane stays silent: a missing buzzer must not stop sales.
func (d *daemon) buildBeeper(pole *display.Pole) payment.BeepSink {
	b := d.cfg.Beeper
	if b == nil {
		return display.NoBeeper{}
	}
	var bp *display.Beeper
	var err error
	switch b.Driver {
	case config.BeeperGPIO:
		bp, err = display.OpenGPIO(b.Chip, b.Line, b.ActiveLow)
	case config.BeeperTone:
		bp, err = display.OpenTone(input.DeviceSpec{Path: b.Device})
	case config.BeeperBell:
		if pole != nil {
			return display.BellBeeper{Pole: pole}
		}
	}
	switch {
	case err != nil:
		d.log.Warn("beeper unusable; the lane stays silent", zap.Error(err))
	case bp != nil:
		d.closers = append(d.closers, func() { bp.Close() })
		return bp
	}
	return display.NoBeeper{}
}

// buildECR makes the register link, driving the terminal through lt, and
// reports whether there is one.
func (d *daemon) buildECR(lt *lateTerminal, obs device.Observer, m *metrics) bool {
	e := d.cfg.ECR
	if e == nil {
		return false
	}
	var allow []netip.Prefix
	for _, a := range e.AllowFrom {
		p, _ := config.ParseNetwork(a) // validated
		allow = append(allow, p)
	}
	var onAnswer func(string, byte)
	if m != nil {
		onAnswer = m.ecrAnswer
	}
	d.link = ecr.NewLink(ecr.Config{POSNumber: e.POSNumber, Currency: d.cfg.Terminal.Currency, AllowRefunds: e.AllowRefunds,
		Timeout: e.Timeout.Duration, KeepResults: e.KeepResults.Duration, IdleTimeout: e.IdleTimeout.Duration, AllowFrom: allow,
		Logger: d.log.Named("ecr"), OnAnswer: onAnswer}, lt)
	if e.Device != "" {
		port := serial.PortConfig{Path: e.Device, Baud: e.Baud, DataBits: e.DataBits, Parity: e.Parity}
		d.runners = append(d.runners, runner{name: "ecr", run: func(ctx context.Context) error {
			return d.link.RunSerial(ctx, port, device.DefaultBackoff(), obs)
		}})
		return true
	}
	listen := e.Listen
	d.runners = append(d.runners, runner{name: "ecr", fatal: true, run: func(ctx context.Context) error {
		ln, err := net.Listen("tcp", listen)
		if err != nil {
			return fmt.Errorf("ecr.listen %s: %w", listen, err)
		}
		d.log.Info("ECR listening", zap.String("address", ln.Addr().String()))
		return d.link.RunTCP(ctx, ln)
	}})
	return true
}

// buildInputs makes the amount and code inputs: the keypad, when there is
// one, and the scanner unless the caller scans through the terminal.
func (d *daemon) buildInputs(o overrides, obs device.Observer) {
	if k := d.cfg.Keypad; k != nil {
		kc := keypad.Config{MaxAmount: d.cfg.Terminal.MaxAmount, MaxDigits: k.MaxDigits}
		if o.observer != nil {
			kc.OnRefuse = o.observer.keyRefused
		}
		kp := &keypad.Keypad{Device: input.DeviceSpec{Path: k.Device, Name: k.Name, VendorProduct: k.VendorProduct},
			Config: kc, Logger: d.log.Named("keypad"), Observer: obs}
		d.runners = append(d.runners, runner{name: "keypad", run: func(ctx context.Context) error { return kp.Run(ctx, keypadSink{d.term}) }})
	}
	if !o.noScanner {
		src := scannerSource(d.cfg.Scanner, d.log.Named("scanner"), obs, o.observer)
		d.runners = append(d.runners, runner{name: "scanner", run: func(ctx context.Context) error { return src.Run(ctx, codeSink{d.term}) }})
	}
}

func scannerSource(s config.Scanner, log *zap.Logger, obs device.Observer, m *metrics) scanner.Source {
	var reject func(string)
	if m != nil {
		reject = m.ScanRejected
	}
	if s.Driver == "serial" {
		return &scanner.SerialScanner{Port: serial.PortConfig{Path: s.Device, Baud: s.Baud, DataBits: s.DataBits, Parity: s.Parity},
			Framer: scanner.FramerConfig{Terminator: s.LineEnding, MaxLen: s.MaxLength}, Logger: log, Observer: obs, OnReject: reject}
	}
	var terms []uint16
	for _, t := range s.Terminators {
		terms = append(terms, config.Terminators[t])
	}
	return &scanner.HIDScanner{Device: input.DeviceSpec{Path: s.Device, Name: s.Name, VendorProduct: s.VendorProduct},
		Decoder: scanner.DecoderConfig{Terminators: terms, IdleTimeout: s.IdleTimeout.Duration, MaxLen: s.MaxLength, StripAIM: s.StripAIM},
		Logger:  log, Observer: obs, OnReject: reject}
}

// Adapters between the parts.

var (
	_ payment.ResultSink = resultFanout(nil)
	_ ecr.Terminal       = (*lateTerminal)(nil)
	_ ecr.Terminal       = (*payment.Terminal)(nil)
	_ keypad.Sink        = keypadSink{}
	_ scanner.Sink       = codeSink{}
)

// resultFanout hands results to several sinks.
type resultFanout []payment.ResultSink

func (f resultFanout) Result(r payment.SaleResult) error {
	var errs []error
	for _, s := range f {
		errs = append(errs, s.Result(r))
	}
	return errors.Join(errs...)
}

// lateTerminal lets the ECR link be built before the terminal it drives.
type lateTerminal struct{ t *payment.Terminal }

func (l *lateTerminal) RequestSale(ctx context.Context, r payment.SaleRequest) error {
	return l.t.RequestSale(ctx, r)
}
func (l *lateTerminal) RefundForECR(ctx context.Context, r payment.ECRRefund) payment.SaleResult {
	return l.t.RefundForECR(ctx, r)
}
func (l *lateTerminal) State() payment.State { return l.t.State() }
func (l *lateTerminal) LastResult(ctx context.Context, ref string) (payment.SaleResult, error) {
	return l.t.LastResult(ctx, ref)
}
func (l *lateTerminal) LastResultFor(ctx context.Context, ref string, amount int64) (payment.SaleResult, error) {
	return l.t.LastResultFor(ctx, ref, amount)
}
func (l *lateTerminal) Taken(ctx context.Context, r payment.SaleResult) { l.t.Taken(ctx, r) }

// keypadSink turns keypad entries into terminal events.
type keypadSink struct{ t *payment.Terminal }

func (k keypadSink) Typing(ctx context.Context, amount int64) error { return k.t.Typing(ctx, amount) }
func (k keypadSink) Confirm(ctx context.Context, amount int64) error {
	return k.t.RequestSale(ctx, payment.SaleRequest{Amount: amount, Source: payment.SourceKeypad})
}
func (k keypadSink) Cancel(ctx context.Context) error { return k.t.Cancel(ctx) }

// codeSink hands scanned codes to the terminal.
type codeSink struct{ t *payment.Terminal }

func (c codeSink) Scan(ctx context.Context, code scanner.Code) error {
	return c.t.Scan(ctx, payment.Code{Text: code.Text, Source: code.Source, At: code.At})
}
