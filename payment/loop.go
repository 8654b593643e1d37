package payment

import (
	"context"
	"errors"
	"runtime"
	"time"

	"go.uber.org/zap"

	"github.com/scanpay/scanpay/payment/iotpay"
	"github.com/scanpay/scanpay/payment/journal"
)

// lane is the state only the loop goroutine touches.
type lane struct {
	t        *Terminal
	ctx      context.Context
	state    State
	pending  *SaleRequest  // amount waiting for a code
	armed    journal.Order // its order, durable since the amount was armed
	sale     *sale
	recover  []journal.Order
	ready    bool
	base     Screen // what the display returns to after a notice
	laneT    *time.Timer
	laneDue  timerPurpose
	screenT  *time.Timer
	saleT    *time.Timer // the sale's wall-clock cap
	syncT    *time.Timer // a settled sale's outcome waits no longer for its fsync
	resultOn bool        // the screen shows a sale result until screenT fires
	clockMsg bool        // "waiting for the clock" was logged
}

type timerPurpose int

const (
	timerNone timerPurpose = iota
	timerCodeTimeout
	timerNextQuery
	timerClock
)

// sale is the order the lane is following.
type sale struct {
	order       journal.Order
	req         SaleRequest // the request that started it (zero when recovered)
	wallet      string
	attempts    int
	maxAttempts int
	deadline    time.Time     // monotonic: the gateway phase ends here
	payOrderID  string        // IOTPay's id, from whichever reply carried it
	notSent     bool          // create_order provably never left
	createFail  *iotpay.Error // create_order said FAIL; a query confirms
	recovered   bool
	// armed: a recovered order still ARMED on disk. Most were never sent
	// (the lane stopped while waiting for a code); one may have been, its
	// code's commit lost to a power cut. One query tells: paid or declined
	// settles it, pending means the gateway has it (followed as a sale),
	// anything else hands it quietly to the reconciler.
	armed bool
	// answered: the gateway gave a real answer about the order (not a
	// lost, refused or mismatching reply) during this sale.
	answered bool
	// decisive: the reply that settled the sale, logged with its outcome
	// once the outcome is out (one line, not two, and none before the screen).
	decisive *gatewayReply
	// paidCreate: a create_order reply that said paid, logged (at info)
	// in the outcome's line whatever the confirming query says: the
	// evidence for "charged, but the screen said not confirmed".
	paidCreate *gatewayReply
}

// Run recovers open orders, then runs the lane until ctx ends (nil) or the
// journal fails (*FatalError). Outputs are drained before it returns.
func (t *Terminal) Run(ctx context.Context) error {
	if !t.running.CompareAndSwap(false, true) {
		return errors.New("payment: terminal already ran")
	}
	t.out = newOutputs(t.log.Named("output"), t.obs, t.sinks.screen, t.sinks.beep, t.sinks.result)
	ctx, cancel := context.WithCancel(ctx)
	t.rec = newReconciler(t)
	recDone := make(chan struct{})
	l := &lane{t: t, ctx: ctx, state: StateStarting, laneT: stoppedTimer(), screenT: stoppedTimer(), saleT: stoppedTimer(), syncT: stoppedTimer()}
	defer func() {
		cancel()
		t.workers.Wait()
		<-recDone
		l.laneT.Stop()
		l.screenT.Stop()
		l.saleT.Stop()
		l.syncT.Stop()
		t.state.Store(int32(StateStopped))
		t.out.close()
		close(t.done)
	}()
	go func() { defer close(recDone); t.rec.run(ctx) }()

	open, err := t.jr.OpenOrders(ctx)
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return l.fatal(err)
	}
	if err := t.markInterruptedRefunds(ctx); err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return l.fatal(err)
	}
	for _, o := range open {
		switch o.State {
		case journal.StateSubmitting, journal.StatePolling, journal.StateArmed:
			l.recover = append(l.recover, o)
		default:
			t.rec.add(o)
		}
	}
	if len(open) > 0 {
		t.log.Info("recovering open orders", zap.Int("resume", len(l.recover)), zap.Int("reconcile", len(open)-len(l.recover)))
	}
	if err := l.nextRecovery(); err != nil {
		return err
	}
	for {
		var err error
		select {
		case <-ctx.Done():
			if err := l.raised(); err != nil {
				return err
			}
			t.log.Info("lane stopping", zap.Stringer("state", l.state))
			return nil
		case err := <-t.fatalc:
			// Raised while the lane was running (stopFatal drops failures
			// of writes cut short by the stop): fatal even if the stop
			// has come since.
			return l.fatal(err)
		case ev := <-t.events:
			err = l.handle(ev)
		case r := <-t.results:
			err = l.onReply(r)
		case <-l.laneT.C:
			err = l.onLaneTimer()
		case <-l.saleT.C:
			err = l.onSaleLimit()
		case <-l.syncT.C:
			err = t.jr.Sync(ctx)
		case <-l.screenT.C:
			l.resultOn = false
			l.show(l.base)
		}
		if err != nil {
			if e := l.raised(); e != nil {
				return e
			}
			if ctx.Err() != nil && (!isStorage(err) || cutShort(ctx, err)) {
				// Stopping: a write cut short by the cancel left the order
				// open on disk, and recovery resumes it.
				t.log.Info("lane stopped mid-step", zap.Error(err))
				return nil
			}
			return l.fatal(err)
		}
	}
}

// raised returns a storage failure raised (stopFatal) and not yet acted
// on, as the lane's fatal error: one answered to its caller just before a
// stop (a failed arm) still ends the daemon as a failure, not a clean stop.
func (l *lane) raised() error {
	select {
	case err := <-l.t.fatalc:
		return l.fatal(err)
	default:
		return nil
	}
}

func stoppedTimer() *time.Timer {
	t := time.NewTimer(time.Hour)
	t.Stop()
	return t
}

// fatal shows the lane out of service and wraps storage errors.
func (l *lane) fatal(err error) error {
	l.t.log.Error("stopping: journal failure", zap.Error(err))
	l.t.out.show(Screen{Kind: ScreenOutOfService, Reason: "storage error"})
	var fe *FatalError
	if errors.As(err, &fe) {
		return fe
	}
	return &FatalError{err}
}

func (l *lane) move(to State) error {
	if err := checkMove(l.state, to); err != nil {
		return err
	}
	l.t.log.Debug("lane", zap.Stringer("from", l.state), zap.Stringer("to", to))
	l.state = to
	l.t.state.Store(int32(to))
	if (to == StateIdle || to == StateWaitingClock) && !l.ready {
		// READY=1 for systemd comes once recovery is over, even while the
		// lane waits for the clock: the process is healthy and says why it
		// takes no sale.
		l.ready = true
		close(l.t.ready)
		l.t.log.Info("lane ready")
		// Used codes are then checked in memory, once loaded (the load
		// reads the whole code index, so it waits until READY).
		l.t.jr.FilterCodes()
	}
	return nil
}

// show sets the lane's screen.
func (l *lane) show(s Screen) {
	l.base = s
	if !l.resultOn {
		l.t.out.show(s)
	}
}

// notice shows s briefly, then the lane's screen again.
func (l *lane) notice(s Screen) {
	l.t.out.show(s)
	l.resultOn = true
	l.screenT.Reset(l.t.cfg.NoticeFor)
}

// showResult shows a sale's outcome for ResultFor, then idle.
func (l *lane) showResult(s Screen) {
	l.base = Screen{Kind: ScreenIdle}
	l.t.out.show(s)
	l.resultOn = true
	l.screenT.Reset(l.t.cfg.ResultFor)
}

func (l *lane) setLaneTimer(p timerPurpose, d time.Duration) {
	l.laneDue = p
	l.laneT.Reset(d)
}

func (l *lane) stopLaneTimer() {
	l.laneDue = timerNone
	l.laneT.Stop()
}

func (l *lane) handle(ev event) error {
	switch ev := ev.(type) {
	case saleEvent:
		ev.reply <- l.onSale(ev.req)
	case cancelEvent:
		ev.reply <- l.onCancel("cancelled")
	case codeEvent:
		return l.onCode(ev.code)
	case typingEvent:
		if l.state == StateIdle {
			switch {
			case ev.amount > l.t.cfg.MaxAmount:
				// Shown with the limit and a beep; the keypad holds Enter
				// until the amount is corrected.
				l.notice(Screen{Kind: ScreenOverLimit, Amount: l.t.cfg.MaxAmount, Currency: l.t.cfg.Currency})
				l.base = Screen{Kind: ScreenTyping, Amount: ev.amount, Currency: l.t.cfg.Currency}
				l.t.out.beep.put(BeepDeclined)
			case ev.amount > 0:
				l.resultOn = false
				l.show(Screen{Kind: ScreenTyping, Amount: ev.amount, Currency: l.t.cfg.Currency})
			default:
				l.show(Screen{Kind: ScreenIdle})
			}
		}
	case noticeEvent:
		if l.state == StateIdle {
			l.notice(ev.screen)
		}
	case pingEvent:
		ev.reply <- l.state
	}
	return nil
}

func (l *lane) onSale(req SaleRequest) error {
	switch l.state {
	case StateStarting:
		return ErrNotReady
	case StateWaitingClock:
		return ErrNoClock
	case StateIdle:
	default:
		l.t.log.Info("sale refused: lane busy", zap.Stringer("state", l.state), zap.String("source", string(req.Source)))
		return ErrBusy
	}
	if req.Amount <= 0 || req.Amount > l.t.cfg.MaxAmount {
		return ErrBadAmount
	}
	if req.Currency == "" {
		req.Currency = l.t.cfg.Currency
	}
	if req.Currency != l.t.cfg.Currency {
		return ErrCurrency
	}
	// The order is made durable now, while the customer finds the code:
	// the scan then sends create_order with no disk write before it.
	o, err := l.t.jr.ArmOrder(l.ctx, journal.Armed{TerminalID: l.t.cfg.TerminalID, Amount: req.Amount, Currency: req.Currency,
		Source: string(req.Source), ECRRef: req.ECRRef, POSNumber: req.POSNumber, ECRType: req.ECRType},
		func(n uint64) string { return OrderNumber(l.t.cfg.TerminalID, n) })
	if err != nil {
		l.t.stopFatal(l.ctx, err)
		return err
	}
	// The arm's fsync covered every commit before it; the sale's own end
	// starts the sync timer again. (A sync falling mid-sale would hold up
	// the loop, and a reply with it, for an fsync.)
	l.syncT.Stop()
	if err := l.move(StateAwaitingCode); err != nil {
		return err
	}
	l.pending, l.armed = &req, o
	l.resultOn = false
	l.screenT.Stop()
	l.show(Screen{Kind: ScreenAwaitingCode, Amount: req.Amount, Currency: req.Currency})
	l.setLaneTimer(timerCodeTimeout, l.t.cfg.CodeTimeout)
	// The armed order's number ties the amount to the sale's later lines
	// (and, naming an order, the line is never held back as a flood).
	fields := make([]zap.Field, 0, 7) // one allocation, the register's fields included
	fields = append(fields, zap.String("mchOrderNo", o.MchOrderNo), zap.Int64("amount", req.Amount), zap.String("source", string(req.Source)))
	if req.Source == SourceECR {
		fields = append(fields, zap.String("ecrRef", req.ECRRef), zap.String("pos", req.POSNumber), zap.String("type", req.ECRType), zap.Uint64("ticket", req.Ticket))
	}
	l.t.log.Info("amount pending", fields...)
	return nil
}

func (l *lane) onCancel(why string) error {
	switch l.state {
	case StateIdle, StateWaitingClock, StateStarting:
		return nil
	case StateAwaitingCode:
	default:
		return ErrBusy
	}
	req, armed := *l.pending, l.armed
	l.pending = nil
	l.stopLaneTimer()
	if _, err := l.t.jr.Transition(l.ctx, armed.MchOrderNo, journal.StateArmed, journal.StateCancelled,
		journal.Update{Status: -1, Message: why}); err != nil {
		l.t.stopFatal(l.ctx, err)
		return err
	}
	if err := l.move(StateIdle); err != nil {
		return err
	}
	l.t.log.Info("amount dropped", zap.String("why", why), zap.Int64("amount", req.Amount))
	l.base = Screen{Kind: ScreenIdle}
	l.notice(Screen{Kind: ScreenCancelled, Amount: req.Amount, Currency: req.Currency, Reason: why})
	l.t.out.result.put(SaleResult{Request: req, Outcome: OutcomeRefused, Message: why, Final: true})
	return nil
}

func (l *lane) onLaneTimer() error {
	due := l.laneDue
	l.laneDue = timerNone
	switch due {
	case timerCodeTimeout:
		if l.state == StateAwaitingCode {
			return l.onCancel("timed out")
		}
	case timerNextQuery:
		if l.sale != nil {
			l.query()
		}
	case timerClock:
		if l.state == StateWaitingClock {
			return l.toIdle()
		}
	}
	return nil
}

func (l *lane) reject(reason string, s Screen, c Code) {
	l.t.log.Info("code refused", zap.String("reason", reason), zap.String("code", iotpay.MaskCode(c.Text)),
		zap.Int("length", len(c.Text)), zap.String("device", c.Source))
	if l.t.obs != nil {
		l.t.obs.ScanRejected(reason)
	}
	l.notice(s)
	l.t.out.beep.put(BeepDeclined)
}

func (l *lane) onCode(c Code) error {
	switch l.state {
	case StateIdle, StateWaitingClock:
		l.reject("no_amount", Screen{Kind: ScreenEnterAmountFirst}, c)
		return nil
	case StateAwaitingCode:
	default:
		// The customer may scan twice; the sale in flight is not disturbed.
		l.t.log.Info("code ignored: sale in progress", zap.String("code", iotpay.MaskCode(c.Text)), zap.Stringer("state", l.state))
		if l.t.obs != nil {
			l.t.obs.ScanRejected("busy")
		}
		return nil
	}
	wallet, ok := l.t.wal.Classify(c.Text)
	if !ok {
		l.reject("unsupported", Screen{Kind: ScreenUnsupported}, c)
		return nil
	}
	hash := l.t.codeHash(c.Text)
	used, err := l.t.jr.CodeUsed(l.ctx, hash)
	if err != nil {
		return err
	}
	if used {
		l.reject("used", Screen{Kind: ScreenCodeUsed}, c)
		return nil
	}
	req, o := *l.pending, l.armed
	l.stopLaneTimer()
	l.pending = nil
	if err := l.move(StateSubmitting); err != nil {
		return err
	}
	l.startSale(&sale{order: o, req: req, wallet: wallet.Name, maxAttempts: l.t.cfg.PollAttempts}, l.t.cfg.SaleLimit)
	// The order has been on disk since the amount was armed: create_order
	// leaves now, and the code's link to it is committed while it flies.
	masked := iotpay.MaskCode(c.Text)
	create := iotpay.CreateRequest{MchOrderNo: o.MchOrderNo, ChannelID: wallet.Channel, Currency: o.Currency, Amount: o.Amount, IdentityCode: c.Text}
	l.call("create_order", func(ctx context.Context) iotpay.Result { return l.t.gw.CreateOrder(ctx, create) })
	// Let the request leave before the journal write below: on one P
	// (the daemon's default) the new goroutine would otherwise wait for it.
	runtime.Gosched()
	l.show(Screen{Kind: ScreenProcessing, Amount: o.Amount, Currency: o.Currency, Wallet: wallet.Name})
	l.t.out.beep.put(BeepAccepted)
	attached, err := l.t.jr.AttachCode(l.ctx, o.MchOrderNo, journal.Code{Channel: wallet.Channel, CodeMasked: masked, CodeHash: hash})
	if errors.Is(err, journal.ErrStateChanged) {
		// An operator's `scanpay query` settled the armed order in the
		// moment its create_order flew (it asks the gateway, with the same
		// rule): the lane takes what the journal says, as after any such
		// conflict, rather than stopping as if the disk had failed.
		return l.stateConflict(err)
	}
	if err != nil {
		// Sent already: the order stays open on disk (armed), and
		// recovery asks the gateway about it.
		return err
	}
	l.sale.order = attached
	l.t.log.Info("order sent", zap.String("mchOrderNo", o.MchOrderNo), zap.Int64("amount", o.Amount),
		zap.String("channel", wallet.Channel), zap.String("code", masked))
	return nil
}

// startSale makes s the lane's sale, with its gateway phase capped at limit.
func (l *lane) startSale(s *sale, limit time.Duration) {
	s.deadline = time.Now().Add(limit)
	l.sale = s
	l.saleT.Reset(limit)
}

// call runs one gateway call for the lane's sale off the loop, bounded by
// the sale's deadline; its reply comes back as an event.
func (l *lane) call(op string, fn func(context.Context) iotpay.Result) {
	s := l.sale
	ctx, cancel := context.WithDeadline(l.ctx, s.deadline)
	l.t.call(ctx, cancel, op, s.order.MchOrderNo, fn)
}

// call runs one gateway call off the loop; its reply comes back as an event.
func (t *Terminal) call(ctx context.Context, cancel context.CancelFunc, op, orderNo string, fn func(context.Context) iotpay.Result) {
	t.workers.Add(1)
	go func() {
		defer t.workers.Done()
		defer cancel()
		start := time.Now()
		res := fn(ctx)
		if t.obs != nil {
			t.obs.GatewayCall(op, res.Outcome, time.Since(start))
		}
		select {
		case t.results <- gatewayReply{op: op, order: orderNo, result: res}:
		case <-ctx.Done():
			// The sale's deadline passed or the lane stopped: the lane no
			// longer waits for this reply (the order is the reconciler's
			// or recovery's now).
		}
	}()
}

func (l *lane) query() {
	no := l.sale.order.MchOrderNo
	l.call("query_order", func(ctx context.Context) iotpay.Result {
		return l.t.gw.QueryOrder(ctx, iotpay.QueryRequest{MchOrderNo: no})
	})
}

func (l *lane) onReply(r gatewayReply) error {
	s := l.sale
	if s == nil || r.order != s.order.MchOrderNo {
		return nil
	}
	res := r.result
	ord := s.order
	ord.NotSent = ord.NotSent || s.notSent // known in memory, not written until the sale settles
	d := Decide(ord, r.op, res, Facts{CreateRefused: s.createFail})
	if d.Mismatch != "" {
		l.t.alert(AlertReplyMismatch, "gateway reply does not match the order: treated as unknown",
			zap.String("mchOrderNo", s.order.MchOrderNo), zap.String("op", r.op), zap.String("why", d.Mismatch))
	} else if res.PayOrderID != "" {
		s.payOrderID = res.PayOrderID
	}
	if r.op != "create_order" && d.To != 0 {
		s.decisive = &r
		return l.finish(d.To, d.Update)
	}
	l.logReply(r, d)
	if r.op == "create_order" {
		return l.onCreate(res, d)
	}
	noAnswer := res.Outcome == iotpay.OutcomeUnknown || d.Mismatch != ""
	s.answered = s.answered || !noAnswer
	if s.recovered && noAnswer {
		// No answer (after a power cut the router often boots after the
		// Pi): a recovered order may have been announced before the crash,
		// so recovery keeps asking until the gateway answers, within the
		// sale's time limit, before it gives up on it.
		l.nextQuery()
		return nil
	}
	s.attempts++
	if s.armed {
		if res.Outcome != iotpay.OutcomePending {
			return l.handOverArmed()
		}
		// The gateway has it: it was sent. Follow it for what is left of
		// its polling window.
		s.armed = false
		s.maxAttempts = max(s.maxAttempts, l.pollsLeft(s.order))
	}
	if res.Outcome == iotpay.OutcomePending && res.Status == iotpay.StatusPaying && d.Mismatch == "" {
		l.show(Screen{Kind: ScreenConfirmOnPhone, Amount: s.order.Amount, Currency: s.order.Currency, Wallet: s.wallet})
	}
	return l.keepPolling(res)
}

func (l *lane) logReply(r gatewayReply, d Decision) {
	log := l.t.log.Info
	if d.Confirm && r.result.Outcome == iotpay.OutcomePaid && l.sale != nil {
		// "paid", to be confirmed: it and the confirming reply are logged
		// in the "sale finished" line. (A line per sale less on the SD card.)
		l.sale.paidCreate = &r
		log = l.t.log.Debug
	}
	log("gateway reply", zap.String("op", r.op), zap.String("mchOrderNo", r.order),
		zap.Stringer("outcome", r.result.Outcome), zap.Int("status", r.result.Status), zap.String("message", r.result.Message()))
}

func (l *lane) onCreate(res iotpay.Result, d Decision) error {
	s := l.sale
	if res.Outcome == iotpay.OutcomeFailed && d.Mismatch == "" {
		s.createFail = res.Err
	}
	s.notSent = d.Update.NotSent
	if d.Confirm {
		// A paid create reply's status is outside the signature, and a
		// refused create must be confirmed: one query, at once, decides.
		if l.state != StatePolling {
			if err := l.move(StatePolling); err != nil {
				return err
			}
		}
		l.query()
		return nil
	}
	if err := l.toPolling(); err != nil {
		return err
	}
	switch {
	case res.Outcome == iotpay.OutcomePending && res.Status == iotpay.StatusPaying:
		l.show(Screen{Kind: ScreenConfirmOnPhone, Amount: s.order.Amount, Currency: s.order.Currency, Wallet: s.wallet})
	case s.notSent:
		l.show(Screen{Kind: ScreenOffline, Amount: s.order.Amount, Currency: s.order.Currency, Reason: res.Message()})
	}
	l.nextQuery()
	return nil
}

// nextQuery schedules the next poll, never past the sale's deadline.
func (l *lane) nextQuery() {
	d := min(l.t.cfg.PollInterval, max(time.Until(l.sale.deadline), time.Millisecond))
	l.setLaneTimer(timerNextQuery, d)
}

// toPolling moves the lane to following the order by query. Nothing is
// written: SUBMITTING and POLLING are the same to recovery, and a sale
// gets at most three commits (armed, code attached, settled).
func (l *lane) toPolling() error {
	if l.state != StatePolling {
		return l.move(StatePolling)
	}
	return nil
}

// stateConflict handles a journal refusal: storage errors stop the lane; a
// move made meanwhile by another process (an operator's query) ends the
// lane's sale with what the journal now says.
func (l *lane) stateConflict(err error) error {
	if !errors.Is(err, journal.ErrStateChanged) {
		return err
	}
	o, gerr := l.t.jr.Get(l.ctx, l.sale.order.MchOrderNo)
	if gerr != nil {
		return gerr
	}
	l.t.log.Warn("order moved by another process", zap.String("mchOrderNo", o.MchOrderNo), zap.Stringer("state", o.State))
	l.sale.order = o
	if o.State.Open() {
		return nil
	}
	l.announce(o)()
	return l.nextRecovery()
}

func (l *lane) keepPolling(res iotpay.Result) error {
	s := l.sale
	if s.attempts >= s.maxAttempts || !time.Now().Before(s.deadline) {
		return l.finish(journal.StateUnconfirmed, journal.Update{Status: res.Status, Message: "not confirmed: " + res.Message()})
	}
	if err := l.toPolling(); err != nil {
		return err
	}
	l.nextQuery()
	return nil
}

// onSaleLimit ends a sale whose gateway phase ran past its cap, whatever
// call is still in flight: the customer and the register are told "not
// confirmed" and the reconciler follows the order.
func (l *lane) onSaleLimit() error {
	s := l.sale
	if s == nil {
		return nil
	}
	l.t.log.Warn("sale reached its time limit", zap.String("mchOrderNo", s.order.MchOrderNo), zap.Int("queries", s.attempts))
	if s.armed {
		return l.handOverArmed()
	}
	return l.finish(journal.StateUnconfirmed, journal.Update{Status: -1, Message: "not confirmed in time"})
}

// finish settles the sale: its outcome is shown and reported at once (the
// gateway's answer decides it), then committed before the lane takes the
// next sale. A crash between the two leaves the order open on disk, and
// recovery asks the gateway again. A sale's outcome is committed without
// its own fsync (journal.Settle): the next synced commit makes it durable
// (the register's "taken" mark, the next sale's arm, or the Sync at most
// SyncAfter later), and a power cut before that, like a crash before the
// commit, leaves the order open for recovery. A recovered order's outcome
// is synced at once: READY waits for it.
//
// "Not confirmed" is the exception (unconfirmed). It is the lane's
// verdict, not the gateway's, so recovery could not reach it again.
func (l *lane) finish(to journal.State, u journal.Update) error {
	s := l.sale
	if u.PayOrderID == "" {
		u.PayOrderID = s.payOrderID
	}
	u.NotSent = u.NotSent || s.notSent
	if s.recovered && !s.answered && to == journal.StateUnconfirmed {
		// A restart interrupted it and the gateway never answered since:
		// an approval may have been shown before the crash, so a late
		// payment of it is held for the operator, not refunded. (Had the
		// gateway answered "pending" or "unknown order", no approval can
		// have been shown: that needs a paid answer.)
		u.Interrupted = true
	}
	from := s.order.State
	settled := journal.Apply(s.order, to, u)
	if to == journal.StateUnconfirmed {
		return l.unconfirmed(from, settled, u)
	}
	committed := l.t.beginSettle()
	logFinished := l.announce(settled)
	write := l.t.jr.Settle
	if s.recovered {
		write = l.t.jr.Transition
	}
	o, err := write(l.ctx, settled.MchOrderNo, from, to, u)
	committed()
	logFinished()
	if !s.recovered {
		l.syncT.Reset(l.t.cfg.SyncAfter)
	}
	switch {
	case errors.Is(err, journal.ErrStateChanged):
		// Another process (an operator's query) settled it meanwhile, with
		// the same rule; the journal keeps what it wrote.
		l.t.log.Warn("order settled by another process meanwhile", zap.String("mchOrderNo", settled.MchOrderNo), zap.Error(err))
	case err != nil:
		return err
	case o.State == journal.StateUnconfirmed:
		l.t.rec.add(o) // only once it is UNCONFIRMED on disk
	}
	return l.nextRecovery()
}

// unconfirmed settles the sale "not confirmed": committed with its own
// fsync first, then shown and reported. Recovery could not reach that
// outcome again: it would ask the gateway, and a payment the customer
// completed after being told "not paid" would read PAID, not LATE_PAID,
// neither refunded nor held for the operator. The sale has waited out its
// polling window; one fsync more before its screen costs it nothing.
func (l *lane) unconfirmed(from journal.State, settled journal.Order, u journal.Update) error {
	o, err := l.t.jr.Transition(l.ctx, settled.MchOrderNo, from, journal.StateUnconfirmed, u)
	if errors.Is(err, journal.ErrStateChanged) {
		// Another process (an operator's query) settled it meanwhile, with
		// the same rule: what the journal now says is announced.
		l.t.log.Warn("order settled by another process meanwhile", zap.String("mchOrderNo", settled.MchOrderNo), zap.Error(err))
		o, err = l.t.jr.Get(l.ctx, settled.MchOrderNo)
	}
	if err != nil {
		return err
	}
	l.announce(o)()
	if o.State == journal.StateUnconfirmed {
		l.t.rec.add(o)
	}
	return l.nextRecovery()
}

// announce shows, beeps and reports an outcome, and frees the lane. It
// returns the outcome's log line (and metric), which the caller writes
// once the outcome is committed: the line is bookkeeping, like the commit,
// and waking the log's reader (journald) must not compete with the
// display's bytes.
func (l *lane) announce(o journal.Order) (logFinished func()) {
	s := l.sale
	l.stopLaneTimer()
	l.saleT.Stop()
	l.sale = nil
	scr := Screen{Amount: o.Amount, Currency: o.Currency, Wallet: s.wallet, Reason: o.Message}
	switch o.State {
	case journal.StatePaid:
		scr.Kind = ScreenApproved
		l.t.out.beep.put(BeepApproved)
	case journal.StateDeclined:
		scr.Kind = ScreenDeclined
		l.t.out.beep.put(BeepDeclined)
	default:
		scr.Kind = ScreenNotConfirmed
		l.t.out.beep.put(BeepDeclined)
	}
	res := resultFromOrder(o)
	if !s.recovered {
		res.Request.Ticket, res.Request.Source = s.req.Ticket, s.req.Source
	}
	// The lane is free (for the register, whose next request must not get
	// NAK) before the result goes out. A recovered order is first written:
	// READY comes only once every open order is settled on disk.
	if !s.recovered && l.state != StateIdle && len(l.recover) == 0 && l.clockReady() {
		_ = l.move(StateIdle)
	}
	l.t.out.result.put(res)
	// The screen is put last: the runtime runs the goroutine woken last
	// first, and the customer is watching it.
	l.showResult(scr)
	// The outputs go out now; the commit and the log line wait (on one P,
	// the daemon's default, they would otherwise go first).
	runtime.Gosched()
	return func() {
		fields := make([]zap.Field, 0, 10) // one allocation, the replies' fields included
		fields = append(fields, zap.String("mchOrderNo", o.MchOrderNo), zap.Stringer("state", o.State),
			zap.String("payOrderId", o.PayOrderID), zap.String("message", o.Message), zap.Bool("recovered", s.recovered))
		if r := s.decisive; r != nil {
			fields = append(fields, zap.String("reply", r.op), zap.Stringer("outcome", r.result.Outcome), zap.Int("status", r.result.Status))
		}
		if r := s.paidCreate; r != nil {
			fields = append(fields, zap.Int("createStatus", r.result.Status), zap.String("createPayOrderId", r.result.PayOrderID))
		}
		l.t.log.Info("sale finished", fields...)
		if l.t.obs != nil {
			l.t.obs.SaleFinished(o.Channel, o.State)
		}
	}
}

// nextRecovery resumes the next open order left by a previous run. An
// order still inside its polling window gets the rest of the window; an
// older one (or one whose age the clock cannot tell) gets one query before
// it goes to the reconciler.
func (l *lane) nextRecovery() error {
	if len(l.recover) == 0 {
		return l.toIdle()
	}
	o := l.recover[0]
	l.recover = l.recover[1:]
	age := l.t.now().Sub(o.CreatedAt)
	left := l.pollsLeft(o)
	armed := o.State == journal.StateArmed
	if armed {
		left = 1 // one query tells whether it was ever sent
	}
	if l.state != StatePolling {
		if err := l.move(StatePolling); err != nil {
			return err
		}
	}
	l.startSale(&sale{order: o, wallet: l.t.wal.Name(o.Channel), maxAttempts: left, recovered: true, notSent: o.NotSent, payOrderID: o.PayOrderID,
		armed: armed}, l.t.cfg.SaleLimit)
	l.t.log.Info("resuming order", zap.String("mchOrderNo", o.MchOrderNo), zap.Stringer("state", o.State),
		zap.Duration("age", age), zap.Int("queries", left))
	l.show(Screen{Kind: ScreenRecovering, Amount: o.Amount, Currency: o.Currency})
	l.query()
	return nil
}

// pollsLeft is how many queries a recovered order still gets: the rest of
// its polling window, or one for an older order (or one whose age the
// clock cannot tell).
func (l *lane) pollsLeft(o journal.Order) int {
	window := time.Duration(l.t.cfg.PollAttempts) * l.t.cfg.PollInterval
	age := l.t.now().Sub(o.CreatedAt)
	if age >= 0 && age < window {
		return max(1, l.t.cfg.PollAttempts-int(age/l.t.cfg.PollInterval))
	}
	return 1
}

// handOverArmed gives a recovered ARMED order the gateway did not show as
// sent to the reconciler, without a word to the customer or the register:
// almost always it is an amount that never became a payment, and the
// reconciler cancels it once the gateway has not known it for 10 minutes
// (or finds it paid, LATE_PAID, and refunds it).
func (l *lane) handOverArmed() error {
	s := l.sale
	l.stopLaneTimer()
	l.saleT.Stop()
	l.sale = nil
	moved, err := l.t.jr.Transition(l.ctx, s.order.MchOrderNo, journal.StateArmed, journal.StateUnconfirmed,
		journal.Update{Status: -1, Message: "interrupted before its code was recorded", Interrupted: !s.answered})
	switch {
	case errors.Is(err, journal.ErrStateChanged):
		l.t.log.Warn("order moved by another process", zap.String("mchOrderNo", s.order.MchOrderNo))
	case err != nil:
		return err
	default:
		l.t.rec.add(moved)
	}
	l.t.log.Info("armed order handed to the reconciler", zap.String("mchOrderNo", s.order.MchOrderNo))
	return l.nextRecovery()
}

// toIdle frees the lane for the next sale, unless the clock is not
// synchronised yet: then it waits, says so on the display, and checks
// again every ClockPoll.
func (l *lane) toIdle() error {
	if !l.clockReady() {
		if l.state != StateWaitingClock {
			if err := l.move(StateWaitingClock); err != nil {
				return err
			}
			l.show(Screen{Kind: ScreenWaitingClock})
		}
		l.setLaneTimer(timerClock, l.t.cfg.ClockPoll)
		return nil
	}
	if l.state == StateIdle {
		return nil
	}
	from := l.state
	if err := l.move(StateIdle); err != nil {
		return err
	}
	if from == StateWaitingClock || !l.resultOn {
		l.resultOn = false
		l.show(Screen{Kind: ScreenIdle})
	}
	return nil
}

// clockReady asks the clock check; once it said yes in this run, a sale
// never waits again (a later loss of sync is NTP's business, and every
// window runs on the monotonic clock anyway).
func (l *lane) clockReady() bool {
	if l.t.sync == nil || l.t.clockOK.Load() {
		return true
	}
	ok, err := l.t.sync()
	if ok {
		l.t.clockOK.Store(true)
		if l.clockMsg {
			l.t.log.Info("clock synchronised: taking sales")
		}
		return true
	}
	if !l.clockMsg {
		l.clockMsg = true
		l.t.log.Warn("waiting for the system clock to be synchronised before taking sales (check timedatectl; see terminal.require_clock_sync)",
			zap.Time("clock", l.t.now()), zap.Error(err))
	}
	return false
}

// markInterruptedRefunds turns refunds left SENT by a previous run into
// UNKNOWN: the process died between sending and recording the reply, so
// only the operator (IOTPay portal) can tell whether the money went back.
func (t *Terminal) markInterruptedRefunds(ctx context.Context) error {
	refunds, err := t.jr.OpenRefunds(ctx)
	if err != nil {
		return err
	}
	for _, r := range refunds {
		if r.State != journal.RefundSent {
			continue
		}
		if _, err := t.jr.FinishRefund(ctx, r.MchRefundNo, journal.RefundUnknown, "interrupted: check it in the IOTPay portal"); err != nil && !errors.Is(err, journal.ErrStateChanged) {
			return err
		}
		t.log.Warn("refund interrupted by a restart: check it in the IOTPay portal",
			zap.String("mchRefundNo", r.MchRefundNo), zap.String("mchOrderNo", r.MchOrderNo), zap.Int64("amount", r.Amount))
	}
	return nil
}
