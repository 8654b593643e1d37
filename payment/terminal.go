package payment

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"regexp"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/scanpay/scanpay/payment/iotpay"
	"github.com/scanpay/scanpay/payment/journal"
)

// Config is the engine's policy.
type Config struct {
	TerminalID   string // 1–12 letters, digits or _; starts every order number
	Currency     string // CAD or USD
	MaxAmount    int64  // cents
	PollInterval time.Duration
	PollAttempts int
	// CodeTimeout returns an amount that waits for a code to idle.
	CodeTimeout time.Duration
	// NoticeFor is how long a brief error screen (unsupported code, …)
	// stays before the lane's screen comes back.
	NoticeFor time.Duration
	// ResultFor is how long the approved/declined screen stays.
	ResultFor time.Duration
	// RefundLate refunds late payments automatically.
	RefundLate bool
	// Reconciler policy for unconfirmed orders.
	ReconcileFor       time.Duration // keep querying this long after creation (24 h)
	ReconcileMin       time.Duration // first retry delay
	ReconcileMax       time.Duration // backoff cap
	NotFoundFinalAfter time.Duration // an order the gateway still does not know this long after creation was never received
}

// DefaultConfig returns the documented defaults.
func DefaultConfig() Config {
	return Config{
		TerminalID: "LANE1", Currency: "CAD", MaxAmount: 100000,
		PollInterval: 2 * time.Second, PollAttempts: 30,
		CodeTimeout: 120 * time.Second, NoticeFor: 3 * time.Second, ResultFor: 8 * time.Second,
		ReconcileFor: 24 * time.Hour, ReconcileMin: 15 * time.Second, ReconcileMax: 10 * time.Minute,
		NotFoundFinalAfter: 10 * time.Minute,
	}
}

var terminalIDPattern = regexp.MustCompile(`^[A-Za-z0-9_]{1,12}$`)

// Validate checks the policy.
func (c Config) Validate() error {
	switch {
	case !terminalIDPattern.MatchString(c.TerminalID):
		return fmt.Errorf("terminal id %q must be 1–12 letters, digits or _", c.TerminalID)
	case c.Currency != "CAD" && c.Currency != "USD":
		return fmt.Errorf("currency %q must be CAD or USD", c.Currency)
	case c.MaxAmount <= 0 || c.MaxAmount > 99999999:
		return fmt.Errorf("max amount %d must be 1–99999999 cents", c.MaxAmount)
	case c.PollInterval <= 0 || c.PollAttempts <= 0:
		return errors.New("poll interval and attempts must be positive")
	case c.CodeTimeout <= 0 || c.NoticeFor <= 0 || c.ResultFor <= 0:
		return errors.New("screen and code timeouts must be positive")
	case c.ReconcileFor <= 0 || c.ReconcileMin <= 0 || c.ReconcileMax < c.ReconcileMin || c.NotFoundFinalAfter <= 0:
		return errors.New("reconcile durations must be positive, with max ≥ min")
	}
	return nil
}

// Deps are the terminal's collaborators. Gateway, Journal and Wallets are
// required; a nil output is simply not driven.
type Deps struct {
	Gateway  Gateway
	Journal  Journal
	Wallets  Classifier
	Screen   ScreenSink
	Beeper   BeepSink
	Results  ResultSink
	Observer Observer
	Logger   *zap.Logger
	Now      func() time.Time
}

// Errors returned to callers that ask for a sale.
var (
	ErrBusy      = errors.New("a sale is in progress")
	ErrNotReady  = errors.New("terminal is not ready")
	ErrStopped   = errors.New("terminal stopped")
	ErrBadAmount = errors.New("amount out of range")
	ErrCurrency  = errors.New("currency not supported by this terminal")
	ErrNoOrder   = errors.New("no such order")
)

// FatalError stops the terminal: the journal could not save state.
type FatalError struct{ Err error }

func (e *FatalError) Error() string { return "fatal: " + e.Err.Error() }
func (e *FatalError) Unwrap() error { return e.Err }

// Terminal is one checkout lane's sale engine.
type Terminal struct {
	cfg  Config
	gw   Gateway
	jr   Journal
	wal  Classifier
	obs  Observer
	log  *zap.Logger
	now  func() time.Time
	out  *outputs
	refs *Refunder
	rec  *reconciler

	sinks struct {
		screen ScreenSink
		beep   BeepSink
		result ResultSink
	}

	events  chan event
	results chan gatewayReply
	fatalc  chan error // storage failures outside the loop (reconciler, refunds)
	done    chan struct{}
	ready   chan struct{}
	state   atomic.Int32
	running atomic.Bool
	workers sync.WaitGroup
}

// New builds a terminal; Run starts it.
func New(cfg Config, d Deps) (*Terminal, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if d.Gateway == nil || d.Journal == nil || d.Wallets == nil {
		return nil, errors.New("payment: gateway, journal and wallets are required")
	}
	if d.Logger == nil {
		d.Logger = zap.NewNop()
	}
	if d.Now == nil {
		d.Now = time.Now
	}
	t := &Terminal{
		cfg: cfg, gw: d.Gateway, jr: d.Journal, wal: d.Wallets, obs: d.Observer, log: d.Logger, now: d.Now,
		events:  make(chan event),
		results: make(chan gatewayReply),
		fatalc:  make(chan error, 1),
		done:    make(chan struct{}),
		ready:   make(chan struct{}),
	}
	t.sinks.screen, t.sinks.beep, t.sinks.result = d.Screen, d.Beeper, d.Results
	t.refs = &Refunder{TerminalID: cfg.TerminalID, Currency: cfg.Currency, Gateway: d.Gateway, Journal: d.Journal, Logger: d.Logger.Named("refund")}
	t.state.Store(int32(StateStarting))
	return t, nil
}

// State is the lane's current state, safe to read from any goroutine.
func (t *Terminal) State() State { return State(t.state.Load()) }

// Ready is closed once recovery is over and sales are accepted.
func (t *Terminal) Ready() <-chan struct{} { return t.ready }

// Done is closed when Run has returned.
func (t *Terminal) Done() <-chan struct{} { return t.done }

// events the loop consumes

type event interface{}

type saleEvent struct {
	req   SaleRequest
	reply chan error
}

type cancelEvent struct{ reply chan error }

type codeEvent struct{ code Code }

type typingEvent struct{ amount int64 }

type noticeEvent struct{ screen Screen }

type pingEvent struct{ reply chan State }

// gatewayReply is a finished gateway call for the lane's sale.
type gatewayReply struct {
	op     string // create_order or query_order
	order  string // mchOrderNo
	result iotpay.Result
}

// send delivers an event to the loop unless ctx ends or the loop stopped.
func (t *Terminal) send(ctx context.Context, ev event) error {
	select {
	case t.events <- ev:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-t.done:
		return ErrStopped
	}
}

// RequestSale asks for a payment. It returns at once: nil when the lane
// now waits for a code, ErrBusy while another sale runs, ErrNotReady during
// recovery, ErrBadAmount or ErrCurrency for a request it refuses.
func (t *Terminal) RequestSale(ctx context.Context, req SaleRequest) error {
	err, askErr := ask(t, ctx, func(reply chan error) event { return saleEvent{req, reply} })
	if askErr != nil {
		return askErr
	}
	return err
}

// ask sends the loop an event carrying a reply channel and waits for the
// answer, unless ctx ends or the loop stops.
func ask[T any](t *Terminal, ctx context.Context, build func(chan T) event) (T, error) {
	reply := make(chan T, 1)
	var zero T
	if err := t.send(ctx, build(reply)); err != nil {
		return zero, err
	}
	select {
	case v := <-reply:
		return v, nil
	case <-ctx.Done():
		return zero, ctx.Err()
	case <-t.done:
		return zero, ErrStopped
	}
}

// Cancel drops a pending amount. A sale already sent to the gateway cannot
// be cancelled (IOTPay has no reverse); Cancel then returns ErrBusy.
func (t *Terminal) Cancel(ctx context.Context) error {
	err, askErr := ask(t, ctx, func(reply chan error) event { return cancelEvent{reply} })
	if askErr != nil {
		return askErr
	}
	return err
}

// Scan hands a scanned code to the lane.
func (t *Terminal) Scan(ctx context.Context, c Code) error {
	return t.send(ctx, codeEvent{c})
}

// Typing echoes an amount being typed on the keypad (0 clears it).
func (t *Terminal) Typing(ctx context.Context, amount int64) error {
	return t.send(ctx, typingEvent{amount})
}

// Ping checks that the loop is alive and answering; the watchdog uses it.
func (t *Terminal) Ping(ctx context.Context) (State, error) {
	s, err := ask(t, ctx, func(reply chan State) event { return pingEvent{reply} })
	if err != nil {
		return StateStopped, err
	}
	return s, nil
}

// Refund refunds amount cents (0: all that is left) of a paid order named by
// its mchOrderNo or payOrderId, journaled before it is sent, and shows the
// outcome on the display.
func (t *Terminal) Refund(ctx context.Context, id string, amount int64) (journal.Refund, error) {
	r, err := t.refs.Refund(ctx, id, amount)
	if isStorage(err) {
		t.stopFatal(err)
		return r, &FatalError{err}
	}
	if err == nil || r.MchRefundNo != "" {
		screen := Screen{Kind: ScreenRefundDone, Amount: r.Amount, Currency: t.cfg.Currency}
		if r.State != journal.RefundDone {
			screen = Screen{Kind: ScreenRefundFailed, Amount: r.Amount, Currency: t.cfg.Currency, Reason: r.Message}
		}
		_ = t.send(ctx, noticeEvent{screen})
	}
	return r, err
}

// RefundForECR refunds amount cents of the register's sale: the newest
// order with reference ref, or the lane's last paid order when ref is
// blank. Approved means the gateway accepted the refund; unknown, that its
// reply was lost.
func (t *Terminal) RefundForECR(ctx context.Context, ref string, amount int64) SaleResult {
	res := SaleResult{Request: SaleRequest{Amount: amount, Source: SourceECR, ECRRef: ref}, Outcome: OutcomeRefused, Final: true}
	var o journal.Order
	var err error
	if ref != "" {
		o, err = t.jr.LastByRef(ctx, ref)
	} else {
		o, err = t.jr.LastPaid(ctx)
	}
	if err != nil {
		res.Message = "no sale to refund"
		t.log.Info("ECR refund refused", zap.String("ref", ref), zap.Error(err))
		return res
	}
	r, err := t.Refund(ctx, o.MchOrderNo, amount)
	res.MchOrderNo, res.PayOrderID, res.Channel = o.MchOrderNo, o.PayOrderID, o.Channel
	switch {
	case err != nil:
		res.Message = err.Error()
	case r.State == journal.RefundDone:
		res.Outcome = OutcomeApproved
	case r.State == journal.RefundUnknown:
		res.Outcome, res.Message = OutcomeUnknown, "refund not confirmed: check it"
	default:
		res.Message = r.Message
	}
	return res
}

// LastResult returns the result of the newest sale with an ECR reference,
// from the journal, so the ECR can ask for it again after any restart.
func (t *Terminal) LastResult(ctx context.Context, ref string) (SaleResult, error) {
	o, err := t.jr.LastByRef(ctx, ref)
	if errors.Is(err, journal.ErrNotFound) {
		return SaleResult{}, ErrNoOrder
	}
	if err != nil {
		return SaleResult{}, err
	}
	return resultFromOrder(o), nil
}

func resultFromOrder(o journal.Order) SaleResult {
	r := SaleResult{
		Request:    SaleRequest{Amount: o.Amount, Currency: o.Currency, Source: Source(o.Source), ECRRef: o.ECRRef, POSNumber: o.POSNumber},
		MchOrderNo: o.MchOrderNo, PayOrderID: o.PayOrderID, Channel: o.Channel, Message: o.Message,
		Outcome: OutcomeUnknown, Final: !o.State.Open(),
	}
	switch o.State {
	case journal.StatePaid:
		r.Outcome = OutcomeApproved
	case journal.StateDeclined:
		r.Outcome = OutcomeRefused
	}
	return r
}

// codeHash is the keyed hash kept for duplicate detection.
func (t *Terminal) codeHash(code string) string {
	m := hmac.New(sha256.New, t.jr.Secret())
	m.Write([]byte(code))
	return hex.EncodeToString(m.Sum(nil))
}

const suffixAlphabet = "23456789ABCDEFGHJKMNPQRSTUVWXYZ"

// randomSuffix guards order numbers against a lost journal: a restarted
// counter alone would repeat numbers the gateway has already seen.
func randomSuffix(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic("crypto/rand failed: " + err.Error())
	}
	for i := range b {
		b[i] = suffixAlphabet[int(b[i])%len(suffixAlphabet)]
	}
	return string(b)
}

// OrderNumber builds an mchOrderNo: terminal id, persisted counter and a
// random suffix; at most 12+1+10+1+5 = 29 characters.
func OrderNumber(terminalID string, counter uint64) string {
	return fmt.Sprintf("%s-%08d-%s", terminalID, counter%10000000000, randomSuffix(5))
}

// stopFatal makes Run return a FatalError: the journal failed outside the
// loop and nothing may carry on with state that was not saved.
func (t *Terminal) stopFatal(err error) {
	select {
	case t.fatalc <- err:
	default:
	}
}

func isStorage(err error) bool { return errors.Is(err, journal.ErrStorage) }
