package payment

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
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
	NotFoundFinalAfter time.Duration // an order the gateway keeps not knowing this long (monotonic) was never received
	// ReconcileRescan is how often the reconciler re-reads the journal for
	// orders another process settled or flagged (an operator's query that
	// found a late payment, say).
	ReconcileRescan time.Duration
	// SaleLimit caps a sale's gateway phase, from the scan to the answer
	// (monotonic): past it the sale ends "not confirmed" whatever the
	// polling count, and the reconciler follows the order.
	SaleLimit time.Duration
	// RefundWindow is how recent the lane's last paid sale must be for a
	// register refund with a blank reference to name it.
	RefundWindow time.Duration
	// ClockPoll is how often a lane waiting for the clock checks it again.
	ClockPoll time.Duration
	// SyncAfter bounds how long a sale's outcome, committed without its
	// own fsync (journal.Settle), may wait for one: the register's "taken"
	// mark or the next sale's arm usually comes first and covers it.
	SyncAfter time.Duration
}

// DefaultConfig returns the documented defaults.
func DefaultConfig() Config {
	return Config{
		TerminalID: "LANE1", Currency: "CAD", MaxAmount: 100000,
		PollInterval: 2 * time.Second, PollAttempts: 30,
		CodeTimeout: 120 * time.Second, NoticeFor: 3 * time.Second, ResultFor: 8 * time.Second,
		ReconcileFor: 24 * time.Hour, ReconcileMin: 15 * time.Second, ReconcileMax: 10 * time.Minute,
		NotFoundFinalAfter: 10 * time.Minute, ReconcileRescan: time.Minute,
		SaleLimit: 90 * time.Second, RefundWindow: 10 * time.Minute, ClockPoll: time.Second,
		SyncAfter: time.Second,
	}
}

// Validate checks the policy.
func (c Config) Validate() error {
	if errs := CheckLane(c.TerminalID, c.Currency, c.MaxAmount); len(errs) > 0 {
		return errs[0]
	}
	switch {
	case c.PollInterval <= 0 || c.PollAttempts <= 0:
		return errors.New("poll interval and attempts must be positive")
	case c.CodeTimeout <= 0 || c.NoticeFor <= 0 || c.ResultFor <= 0:
		return errors.New("screen and code timeouts must be positive")
	case c.ReconcileFor <= 0 || c.ReconcileMin <= 0 || c.ReconcileMax < c.ReconcileMin || c.NotFoundFinalAfter <= 0 || c.ReconcileRescan <= 0:
		return errors.New("reconcile durations must be positive, with max ≥ min")
	case c.SaleLimit <= 0 || c.RefundWindow <= 0 || c.ClockPoll <= 0 || c.SyncAfter <= 0:
		return errors.New("sale limit, refund window, clock poll and sync delay must be positive")
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
	// Now is the wall clock, for the times written to the journal. Every
	// window and timeout runs on the monotonic clock instead, so a clock
	// that jumps (a Pi without RTC before NTP) cannot shorten or stretch
	// them.
	Now func() time.Time
	// ClockSynced reports whether the system clock is synchronised; nil
	// means do not wait for it. While it says false after recovery, the
	// lane takes no sale.
	ClockSynced func() (bool, error)
}

// Errors returned to callers that ask for a sale.
var (
	ErrBusy      = errors.New("a sale is in progress")
	ErrNotReady  = errors.New("terminal is not ready")
	ErrStopped   = errors.New("terminal stopped")
	ErrBadAmount = errors.New("amount out of range")
	ErrCurrency  = errors.New("currency not supported by this terminal")
	ErrNoOrder   = errors.New("no such order")
	ErrNoClock   = errors.New("waiting for the clock to be synchronised")
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
	now  func() time.Time // wall clock, for stamps only
	sync func() (bool, error)
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
	clockOK atomic.Bool // the clock was seen synchronised in this run
	workers sync.WaitGroup

	// blankRefunds remembers this run's blank-reference register refunds
	// on the monotonic clock (see retryCandidate).
	blankRefunds refundMemory

	// settling is closed once the outcome the lane last announced is on
	// disk. Results go out before their commit (the fast path), so a
	// register that refunds or re-asks the instant it hears "approved"
	// waits here for that commit instead of reading the order still open.
	settling struct {
		mu sync.Mutex
		ch chan struct{}
	}
}

// refundMemory holds when (monotonic) each of the newest refunds was made.
type refundMemory struct {
	mu    sync.Mutex
	at    map[string]time.Time
	order []string
}

const refundMemorySize = 64

func (m *refundMemory) add(no string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.at == nil {
		m.at = map[string]time.Time{}
	}
	m.at[no] = time.Now()
	m.order = append(m.order, no)
	if len(m.order) > refundMemorySize {
		delete(m.at, m.order[0])
		m.order = append(m.order[:0], m.order[1:]...)
	}
}

// recent reports whether refund no was made in this run within window.
func (m *refundMemory) recent(no string, window time.Duration) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	at, ok := m.at[no]
	return ok && time.Since(at) <= window
}

// beginSettle marks an announced outcome not yet on disk; the lane calls
// the returned function once its commit returned (whatever it returned).
func (t *Terminal) beginSettle() func() {
	ch := make(chan struct{})
	t.settling.mu.Lock()
	t.settling.ch = ch
	t.settling.mu.Unlock()
	return func() { close(ch) }
}

// Settled waits until the last announced outcome is on disk. An outcome
// is shown and answered before its commit (README, rule 3); a caller that
// reads the journal right after a result waits here first.
func (t *Terminal) Settled(ctx context.Context) error { return t.awaitSettled(ctx) }

// awaitSettled waits until the last announced outcome is on disk.
func (t *Terminal) awaitSettled(ctx context.Context) error {
	t.settling.mu.Lock()
	ch := t.settling.ch
	t.settling.mu.Unlock()
	if ch == nil {
		return nil
	}
	select {
	case <-ch:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
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
		cfg: cfg, gw: d.Gateway, jr: d.Journal, wal: d.Wallets, obs: d.Observer, log: d.Logger, now: d.Now, sync: d.ClockSynced,
		events:  make(chan event),
		results: make(chan gatewayReply),
		fatalc:  make(chan error, 1),
		done:    make(chan struct{}),
		ready:   make(chan struct{}),
	}
	t.sinks.screen, t.sinks.beep, t.sinks.result = d.Screen, d.Beeper, d.Results
	t.refs = &Refunder{TerminalID: cfg.TerminalID, Currency: cfg.Currency, Gateway: d.Gateway, Journal: d.Journal, Logger: d.Logger.Named("refund"), Observer: d.Observer}
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
func (t *Terminal) Refund(ctx context.Context, req RefundRequest) (journal.Refund, error) {
	if err := t.awaitSettled(ctx); err != nil {
		return journal.Refund{}, err
	}
	r, err := t.refs.Refund(ctx, req)
	if isStorage(err) {
		t.stopFatal(ctx, err)
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

// ECRRefund is a refund the register asks for.
type ECRRefund struct {
	Ref       string // the register's reference: names the sale; blank: the lane's last paid sale
	Amount    int64  // cents
	Currency  string
	POSNumber string
}

// RefundForECR refunds part of a register's sale: the newest order with the
// request's reference, or, for a blank reference, the lane's last paid
// sale if it was paid within RefundWindow. A refund the register asked for
// before on the same sale for the same amount is answered from the journal
// and never sent again. Approved means the gateway accepted the refund;
// refused, that nothing was refunded (refused before sending, or refused
// by the gateway); unknown, that it was sent and its fate is not known.
func (t *Terminal) RefundForECR(ctx context.Context, req ECRRefund) SaleResult {
	res := SaleResult{Request: SaleRequest{Amount: req.Amount, Currency: req.Currency, Source: SourceECR, ECRRef: req.Ref, POSNumber: req.POSNumber},
		Outcome: OutcomeRefused, Final: true}
	log := t.log.With(zap.String("ref", req.Ref), zap.Int64("amount", req.Amount))
	refuse := func(why string, err error) SaleResult {
		res.Message = why
		log.Info("register refund refused", zap.String("why", why), zap.Error(err))
		return res
	}
	if err := t.awaitSettled(ctx); err != nil {
		return refuse("terminal busy", err)
	}
	// A refund with this reference and amount whose answer the register
	// has not taken is what this request may be retrying.
	prev, found, err := t.retryCandidate(ctx, req)
	if err != nil {
		return refuse("journal unavailable", err)
	}
	answerPrev := func() SaleResult {
		log.Info("register refund asked again: answering from the journal", zap.String("mchRefundNo", prev.MchRefundNo), zap.String("state", string(prev.State)))
		res.MchOrderNo = prev.MchOrderNo
		return refundResult(res, prev)
	}
	// The sale the request names: the newest with its reference, or for a
	// blank one the last paid sale, if recent.
	var o journal.Order
	if req.Ref != "" {
		o, err = t.jr.LastByRef(ctx, req.Ref)
	} else {
		o, err = t.jr.LastPaid(ctx)
		if err == nil && t.now().Sub(o.CreatedAt) > t.cfg.RefundWindow {
			if found {
				return answerPrev() // the register retrying after the clock moved on
			}
			return refuse("no recent sale: give the sale's reference", nil)
		}
	}
	switch {
	case errors.Is(err, journal.ErrNotFound):
		if found {
			return answerPrev()
		}
		return refuse("no sale to refund", err)
	case err != nil:
		return refuse("journal unavailable", err)
	case found && prev.MchOrderNo == o.MchOrderNo:
		return answerPrev()
	case found:
		// The request now names another sale than a refund whose answer
		// the register never took: it may retry that one or ask a new
		// refund of this one. Neither is safe to assume; nothing is sent.
		log.Warn("register refund is ambiguous: an earlier refund with this reference and amount was never answered",
			zap.String("earlier", prev.MchRefundNo), zap.String("earlierOrder", prev.MchOrderNo), zap.String("mchOrderNo", o.MchOrderNo))
		res.MchOrderNo, res.RefundNo = prev.MchOrderNo, prev.MchRefundNo
		res.Outcome, res.Message = OutcomeUnknown, "earlier refund not confirmed: check it"
		return res
	case o.State != journal.StatePaid && o.State != journal.StateLatePaid:
		return refuse("sale is "+o.State.String()+": nothing to refund", nil)
	case o.Currency != req.Currency:
		return refuse("currency is not the sale's", nil)
	case o.POSNumber != "" && req.POSNumber != "" && o.POSNumber != req.POSNumber:
		return refuse("sale belongs to another POS", nil)
	}
	res.MchOrderNo, res.PayOrderID, res.Channel, res.At, res.Seq = o.MchOrderNo, o.PayOrderID, o.Channel, o.CreatedAt, o.Seq
	r, err := t.Refund(ctx, RefundRequest{ID: o.MchOrderNo, Amount: req.Amount, Source: journal.RefundByECR, ECRRef: req.Ref})
	if r.MchRefundNo == "" {
		// Nothing was journaled, so nothing was sent.
		return refuse(cashierError(err), err)
	}
	if req.Ref == "" {
		t.blankRefunds.add(r.MchRefundNo)
	}
	if err != nil {
		// Sent, but its outcome could not be recorded: never "refused".
		res.Outcome, res.Message, res.RefundNo = OutcomeUnknown, "refund not verified: check it", r.MchRefundNo
		return res
	}
	return refundResult(res, r)
}

// retryCandidate finds the register refund the request may be retrying:
// the newest with its reference and amount whose answer the register has
// not taken. A blank reference names no sale, so only a recent one counts:
// made within RefundWindow by the wall clock, or by the monotonic clock in
// this run (a retry after the clock stepped forward is still a retry).
func (t *Terminal) retryCandidate(ctx context.Context, req ECRRefund) (journal.Refund, bool, error) {
	since := time.Time{}
	if req.Ref == "" {
		since = t.now().Add(-t.cfg.RefundWindow)
	}
	prev, err := t.jr.RecentECRRefund(ctx, req.Ref, req.Amount, since)
	if err == nil {
		return prev, true, nil
	}
	if !errors.Is(err, journal.ErrNotFound) {
		return journal.Refund{}, false, err
	}
	if req.Ref != "" {
		return journal.Refund{}, false, nil
	}
	prev, err = t.jr.RecentECRRefund(ctx, "", req.Amount, time.Time{})
	switch {
	case errors.Is(err, journal.ErrNotFound):
		return journal.Refund{}, false, nil
	case err != nil:
		return journal.Refund{}, false, err
	}
	return prev, t.blankRefunds.recent(prev.MchRefundNo, t.cfg.RefundWindow), nil
}

// Taken records that the register took r, so the same request again is a
// new sale or refund, not a retry (in this run and after a restart). Only
// an answer that says what happened counts: after "not verified" the
// register may well ask again. A failure is logged: the answer is out.
func (t *Terminal) Taken(ctx context.Context, r SaleResult) {
	if r.Outcome == OutcomeUnknown || !r.Final {
		return
	}
	// After the outcome's commit: the register's answer went out before
	// it, and this mark's fsync is the one that should cover it.
	if err := t.awaitSettled(ctx); err != nil {
		return
	}
	var err error
	switch {
	case r.RefundNo != "":
		err = t.jr.MarkRefundTaken(ctx, r.RefundNo)
	case r.MchOrderNo != "":
		err = t.jr.MarkTaken(ctx, r.MchOrderNo)
	default:
		return
	}
	if isStorage(err) {
		t.stopFatal(ctx, err)
	}
	if err != nil {
		t.log.Warn("could not note that the register took an answer", zap.String("mchOrderNo", r.MchOrderNo), zap.String("mchRefundNo", r.RefundNo), zap.Error(err))
	}
}

func refundResult(res SaleResult, r journal.Refund) SaleResult {
	res.RefundNo = r.MchRefundNo
	switch r.State {
	case journal.RefundDone:
		res.Outcome, res.Message = OutcomeApproved, ""
	case journal.RefundFailed:
		res.Outcome, res.Message = OutcomeRefused, r.Message
	default:
		res.Outcome, res.Message = OutcomeUnknown, "refund not verified: check it"
	}
	return res
}

// cashierError is a short reason for an error, for the register.
func cashierError(err error) string {
	switch {
	case err == nil:
		return ""
	case errors.Is(err, journal.ErrRefundTooLarge):
		return "refund exceeds what is left"
	case errors.Is(err, journal.ErrNotRefundable):
		return "sale is not paid"
	case isStorage(err):
		return "journal unavailable"
	}
	return "refund refused"
}

// LastResult returns the result of the newest sale (by journal sequence)
// with an ECR reference, from the journal, so the ECR can ask for it again
// after any restart. The caller decides whether it answers a request.
func (t *Terminal) LastResult(ctx context.Context, ref string) (SaleResult, error) {
	if err := t.awaitSettled(ctx); err != nil {
		return SaleResult{}, err
	}
	o, err := t.jr.LastByRef(ctx, ref)
	if errors.Is(err, journal.ErrNotFound) {
		return SaleResult{}, ErrNoOrder
	}
	if err != nil {
		return SaleResult{}, err
	}
	return resultFromOrder(o), nil
}

// LastResultFor is LastResult for the newest sale with ref of amount
// cents, for a register asking again about a sale whose reference was
// reused since for another amount.
func (t *Terminal) LastResultFor(ctx context.Context, ref string, amount int64) (SaleResult, error) {
	if err := t.awaitSettled(ctx); err != nil {
		return SaleResult{}, err
	}
	o, err := t.jr.LastByRefAmount(ctx, ref, amount)
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
		Request: SaleRequest{Amount: o.Amount, Currency: o.Currency, Source: Source(o.Source), ECRRef: o.ECRRef,
			POSNumber: o.POSNumber, ECRType: o.ECRType},
		MchOrderNo: o.MchOrderNo, PayOrderID: o.PayOrderID, Channel: o.Channel, Message: o.Message,
		Outcome: OutcomeUnknown, Final: !o.State.Open(), At: o.CreatedAt, Seq: o.Seq, Taken: o.Taken,
	}
	switch o.State {
	case journal.StatePaid:
		r.Outcome = OutcomeApproved
	case journal.StateDeclined, journal.StateCancelled:
		// A cancelled order never reached IOTPay: nothing was charged,
		// and the register heard "refused" when it was dropped. Asked
		// again it hears the same, so its retry is a new sale (ecr's
		// re-ask rule), not a "not verified" for as long as it asks.
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
func (t *Terminal) stopFatal(ctx context.Context, err error) {
	if cutShort(ctx, err) {
		// The write was cut short by its caller's stop: the order or
		// refund stays open on disk, and recovery resumes it.
		return
	}
	select {
	case t.fatalc <- err:
	default:
	}
}

func isStorage(err error) bool { return errors.Is(err, journal.ErrStorage) }

// cutShort reports whether err is ctx's own end interrupting a write, and
// not a failure of the disk. A write made under another context (one
// detached from the caller's, so that an outcome is recorded whatever the
// caller does) can fail for real while the caller is stopping.
func cutShort(ctx context.Context, err error) bool {
	return ctx.Err() != nil && journal.Interrupted(err)
}

// alert logs something an operator must see and counts it.
func (t *Terminal) alert(kind, msg string, fields ...zap.Field) {
	t.log.Error(msg, append(fields, zap.String("alert", kind))...)
	if t.obs != nil {
		t.obs.Alert(kind)
	}
}
