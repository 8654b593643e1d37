package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"sync"
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

// daemon is every component of a lane, built from the config, run under
// one owner.
type daemon struct {
	cfg     config.Config
	log     *zap.Logger
	jr      *journal.Journal
	client  *iotpay.Client
	term    *payment.Terminal
	link    *ecr.Link
	runners []runner
	closers []func()
}

type runner struct {
	name string
	run  func(ctx context.Context) error
	// fatal: an error from run stops the daemon (a listener that cannot
	// bind); device runners retry on their own and never return errors.
	fatal bool
}

// overrides let the demo and tests replace parts of the wiring.
type overrides struct {
	screen     payment.ScreenSink   // instead of the configured display
	noScanner  bool                 // the caller scans through the terminal
	results    []payment.ResultSink // extra result sinks
	httpClient *http.Client         // gateway transport
	observer   *metrics             // metrics, when enabled
	consoleOut io.Writer            // where the console display draws
	// clockSynced replaces the system clock check (tests).
	clockSynced func() (bool, error)
}

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

// gatewayConfig is the gateway client's config for the daemon and the
// operator commands alike, so a refund from the command line identifies
// the lane as a sale from the daemon does. hc nil is the default transport.
func gatewayConfig(cfg config.Config, key string, hc *http.Client) iotpay.Config {
	g := cfg.Gateway
	return iotpay.Config{BaseURL: g.URL, MchID: g.MchID, Key: key, JobNo: g.JobNo, NotifyURL: g.NotifyURL,
		Subject: g.Subject, Body: g.Body, Device: "scanpay", DeviceID: cfg.Terminal.ID, ClientIP: g.ClientIP,
		Timeout: g.Timeout.Duration, RequireSignedReplies: g.RequireSignedReplies, HTTPClient: hc}
}

// build opens the journal and makes every component. A journal that cannot
// be opened is a runtime failure; the rest cannot fail after validation,
// except an unusable beeper, which is logged and left silent.
func build(cfg config.Config, key string, log *zap.Logger, o overrides) (*daemon, error) {
	d := &daemon{cfg: cfg, log: log}
	var err error
	jopts := journal.Options{}
	if o.observer != nil {
		jopts.OnCommit = o.observer.journalCommit
	}
	d.jr, err = journal.Open(cfg.Journal.Path, jopts)
	if err != nil {
		return nil, err
	}
	d.closers = append(d.closers, func() { d.jr.Close() })
	g := cfg.Gateway
	d.client, err = iotpay.New(gatewayConfig(cfg, key, o.httpClient))
	if err != nil {
		d.close()
		return nil, err
	}
	wallets, err := payment.NewWallets(cfg.WalletRules())
	if err != nil {
		d.close()
		return nil, err
	}
	var devObs device.Observer
	var payObs payment.Observer
	if o.observer != nil {
		devObs, payObs = o.observer, o.observer
	}

	// Display and beeper.
	var screen payment.ScreenSink = display.None{}
	var pole *display.Pole
	layout := display.Layout{Width: cfg.Display.Width}
	switch {
	case o.screen != nil:
		screen = o.screen
	case cfg.Display.Driver == "escpos" || cfg.Display.Driver == "cd5220":
		var proto display.Protocol = display.EscPos{Brightness: cfg.Display.Brightness}
		if cfg.Display.Driver == "cd5220" {
			proto = display.CD5220{Brightness: cfg.Display.Brightness}
		}
		pole = display.NewPole(display.Config{Protocol: proto, Layout: layout, Logger: log.Named("display"), Observer: devObs,
			Open: display.SerialOpener(serial.PortConfig{Path: cfg.Display.Device, Baud: cfg.Display.Baud, DataBits: 8, Parity: "none"})})
		screen = pole
		d.runners = append(d.runners, runner{name: "display", run: pole.Run})
	case cfg.Display.Driver == "console":
		out := o.consoleOut
		if out == nil {
			out = io.Discard
		}
		screen = &display.Console{Layout: layout, Out: out}
	}
	var beeper payment.BeepSink = display.NoBeeper{}
	if b := cfg.Beeper; b != nil {
		var bp *display.Beeper
		var berr error
		switch b.Driver {
		case "gpio":
			bp, berr = display.OpenGPIO(b.Chip, b.Line, b.ActiveLow)
		case "tone":
			bp, berr = display.OpenTone(input.DeviceSpec{Path: b.Device})
		case "bell":
			if pole != nil {
				beeper = display.BellBeeper{Pole: pole}
			}
		}
		switch {
		case berr != nil:
			log.Warn("beeper unusable; the lane stays silent", zap.Error(berr))
		case bp != nil:
			beeper = bp
			d.closers = append(d.closers, func() { bp.Close() })
		}
	}

	// The register link, then the terminal it drives.
	results := resultFanout(o.results)
	var lt *lateTerminal
	if e := cfg.ECR; e != nil {
		lt = &lateTerminal{}
		var allow []netip.Prefix
		for _, a := range e.AllowFrom {
			p, _ := config.ParseNetwork(a) // validated
			allow = append(allow, p)
		}
		var onAnswer func(string, byte)
		if o.observer != nil {
			onAnswer = o.observer.ecrAnswer
		}
		d.link = ecr.NewLink(ecr.Config{POSNumber: e.POSNumber, Currency: cfg.Terminal.Currency, AllowRefunds: e.AllowRefunds,
			Timeout: e.Timeout.Duration, KeepResults: e.KeepResults.Duration, IdleTimeout: e.IdleTimeout.Duration, AllowFrom: allow,
			Logger: log.Named("ecr"), OnAnswer: onAnswer}, lt)
		results = append(results, d.link)
		if e.Device != "" {
			port := serial.PortConfig{Path: e.Device, Baud: e.Baud, DataBits: e.DataBits, Parity: e.Parity}
			d.runners = append(d.runners, runner{name: "ecr", run: func(ctx context.Context) error {
				return d.link.RunSerial(ctx, port, device.DefaultBackoff(), devObs)
			}})
		} else {
			listen := e.Listen
			d.runners = append(d.runners, runner{name: "ecr", fatal: true, run: func(ctx context.Context) error {
				ln, err := net.Listen("tcp", listen)
				if err != nil {
					return fmt.Errorf("ecr.listen %s: %w", listen, err)
				}
				log.Info("ECR listening", zap.String("address", ln.Addr().String()))
				return d.link.RunTCP(ctx, ln)
			}})
		}
	}
	pcfg := payment.DefaultConfig()
	pcfg.TerminalID, pcfg.Currency, pcfg.MaxAmount = cfg.Terminal.ID, cfg.Terminal.Currency, cfg.Terminal.MaxAmount
	pcfg.PollInterval, pcfg.PollAttempts = g.PollInterval.Duration, g.PollAttempts
	pcfg.CodeTimeout, pcfg.ResultFor = cfg.Terminal.CodeTimeout.Duration, cfg.Terminal.ResultTime.Duration
	pcfg.RefundLate, pcfg.ReconcileFor = g.RefundLate, g.ReconcileFor.Duration
	pcfg.SaleLimit = g.SaleLimit.Duration
	if cfg.ECR != nil {
		pcfg.RefundWindow = cfg.ECR.RefundWindow.Duration
	}
	var synced func() (bool, error)
	if cfg.Terminal.RequireClockSync {
		synced = o.clockSynced
		if synced == nil {
			synced = clockSynced
		}
	}
	d.term, err = payment.New(pcfg.Derived(), payment.Deps{Gateway: d.client, Journal: d.jr, Wallets: wallets, Screen: screen, Beeper: beeper,
		Results: results, Observer: payObs, Logger: log.Named("lane"), ClockSynced: synced})
	if err != nil {
		d.close()
		return nil, err
	}
	if lt != nil {
		lt.t = d.term
	}

	// Amount and code inputs.
	if k := cfg.Keypad; k != nil {
		kp := &keypad.Keypad{Device: input.DeviceSpec{Path: k.Device, Name: k.Name, VendorProduct: k.VendorProduct},
			Config: keypad.Config{MaxAmount: cfg.Terminal.MaxAmount, MaxDigits: k.MaxDigits}, Logger: log.Named("keypad"), Observer: devObs}
		d.runners = append(d.runners, runner{name: "keypad", run: func(ctx context.Context) error { return kp.Run(ctx, keypadSink{d.term}) }})
	}
	if !o.noScanner {
		src := scannerSource(cfg.Scanner, log.Named("scanner"), devObs, o.observer)
		d.runners = append(d.runners, runner{name: "scanner", run: func(ctx context.Context) error { return src.Run(ctx, codeSink{d.term}) }})
	}
	return d, nil
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

func (d *daemon) close() {
	for i := len(d.closers) - 1; i >= 0; i-- {
		d.closers[i]()
	}
}

// run runs the terminal and every runner until ctx ends (nil) or the
// terminal stops on a journal failure or a fatal runner fails (error).
func (d *daemon) run(ctx context.Context, extra ...runner) error {
	defer d.close()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	termErr := make(chan error, 1)
	go func() { termErr <- d.term.Run(ctx) }()
	fatal := make(chan error, 1)
	var wg sync.WaitGroup
	for _, r := range append(d.runners, extra...) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := r.run(ctx)
			if err != nil && ctx.Err() == nil {
				d.log.Error("component stopped", zap.String("component", r.name), zap.Error(err))
				if r.fatal {
					select {
					case fatal <- err:
					default:
					}
				}
			}
		}()
	}
	var err error
	select {
	case <-ctx.Done():
		err = <-termErr
	case err = <-termErr:
	case err = <-fatal:
		cancel()
		<-termErr
	}
	cancel()
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		d.log.Warn("a component did not stop in time")
	}
	return err
}

func (c *CLI) run(ctx context.Context, args []string) int {
	fs, path := c.flags("run", "", "Runs the payment terminal daemon. systemd starts it; see scanpay.service.")
	if code := parse(fs, args); code >= 0 {
		return code
	}
	cfg, ok := c.loadConfig(*path)
	if !ok {
		return exitUsage
	}
	key, source, err := cfg.LoadKey(c.Getenv)
	if err != nil {
		c.errorf("%v", err)
		return exitUsage
	}
	log := newLogger(cfg.Log, c.Stderr)
	defer log.Sync()
	log.Info("scanpay starting", zap.String("version", c.Version), zap.String("config", *path), zap.String("lane", cfg.Terminal.ID),
		zap.String("merchantKey", "from "+source))
	for _, e := range cfg.CheckDevices() {
		log.Warn("device missing at start; retrying in the background", zap.String("problem", e.Error()))
	}
	for _, w := range cfg.Warnings() {
		log.Warn("config warning", zap.String("warning", w))
	}
	return c.runDaemon(ctx, cfg, key, log, overrides{consoleOut: c.Stdout})
}

// runDaemon builds and runs the daemon, with metrics and systemd
// notification, and maps the outcome to an exit code.
func (c *CLI) runDaemon(ctx context.Context, cfg config.Config, key string, log *zap.Logger, o overrides) int {
	var extra []runner
	if cfg.Metrics != nil && cfg.Metrics.Listen != "" && o.observer == nil {
		o.observer = newMetrics(c.Version)
	}
	d, err := build(cfg, key, log, o)
	if err != nil {
		log.Error("cannot start", zap.Error(err))
		c.errorf("%v", err)
		return exitFailure
	}
	if o.observer != nil && cfg.Metrics != nil && cfg.Metrics.Listen != "" {
		extra = append(extra, o.observer.server(cfg.Metrics.Listen, d, log.Named("metrics")))
		o.observer.watchJournal(d.jr)
	}
	var checks []healthCheck
	if d.link != nil {
		checks = append(checks, d.link.Health)
	}
	extra = append(extra, systemdRunner(d.term, log.Named("systemd"), checks...))
	err = d.run(ctx, extra...)
	var fe *payment.FatalError
	switch {
	case errors.As(err, &fe):
		log.Error("stopped: the journal failed; systemd will restart scanpay and it will recover from the journal", zap.Error(err))
		c.errorf("%v", err)
		return exitFailure
	case err != nil:
		log.Error("stopped", zap.Error(err))
		c.errorf("%v", err)
		return exitFailure
	}
	log.Info("scanpay stopped")
	return exitOK
}
