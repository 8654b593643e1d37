package payment

import (
	"context"
	"errors"
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
	pending  *SaleRequest // amount waiting for a code
	sale     *sale
	recover  []journal.Order
	ready    bool
	base     Screen // what the display returns to after a notice
	laneT    *time.Timer
	laneDue  timerPurpose
	screenT  *time.Timer
	resultOn bool // the screen shows a sale result until screenT fires
}

type timerPurpose int

const (
	timerNone timerPurpose = iota
	timerCodeTimeout
	timerNextQuery
)

// sale is the order the lane is following.
type sale struct {
	order       journal.Order
	wallet      string
	attempts    int
	maxAttempts int
	notSent     bool          // create_order provably never left
	createFail  *iotpay.Error // create_order said FAIL; a query confirms
	recovered   bool
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
	defer func() {
		cancel()
		t.workers.Wait()
		<-recDone
		t.state.Store(int32(StateStopped))
		t.out.close()
		close(t.done)
	}()
	l := &lane{t: t, ctx: ctx, state: StateStarting, laneT: stoppedTimer(), screenT: stoppedTimer()}
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
		case journal.StateSubmitting, journal.StatePolling:
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
			t.log.Info("lane stopping", zap.Stringer("state", l.state))
			return nil
		case err = <-t.fatalc:
		case ev := <-t.events:
			err = l.handle(ev)
		case r := <-t.results:
			err = l.onReply(r)
		case <-l.laneT.C:
			err = l.onLaneTimer()
		case <-l.screenT.C:
			l.resultOn = false
			l.show(l.base)
		}
		if err != nil {
			if ctx.Err() != nil {
				// Stopping: a write cut short by the cancel left the order
				// open on disk, and recovery resumes it.
				t.log.Info("lane stopped mid-step", zap.Error(err))
				return nil
			}
			return l.fatal(err)
		}
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
	l.t.out.screen.put(Screen{Kind: ScreenOutOfService, Reason: "storage error"})
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
	if to == StateIdle && !l.ready {
		l.ready = true
		close(l.t.ready)
		l.t.log.Info("lane ready")
	}
	return nil
}

// show sets the lane's screen.
func (l *lane) show(s Screen) {
	l.base = s
	if !l.resultOn {
		l.t.out.screen.put(s)
	}
}

// notice shows s briefly, then the lane's screen again.
func (l *lane) notice(s Screen) {
	l.t.out.screen.put(s)
	l.resultOn = true
	l.screenT.Reset(l.t.cfg.NoticeFor)
}

// showResult shows a sale's outcome for ResultFor, then idle.
func (l *lane) showResult(s Screen) {
	l.base = Screen{Kind: ScreenIdle}
	l.t.out.screen.put(s)
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
			if ev.amount > 0 {
				l.resultOn = false
				l.show(Screen{Kind: ScreenTyping, Amount: ev.amount, Currency: l.t.cfg.Currency})
			} else {
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
	if err := l.move(StateAwaitingCode); err != nil {
		return err
	}
	l.pending = &req
	l.resultOn = false
	l.screenT.Stop()
	l.show(Screen{Kind: ScreenAwaitingCode, Amount: req.Amount, Currency: req.Currency})
	l.setLaneTimer(timerCodeTimeout, l.t.cfg.CodeTimeout)
	l.t.log.Info("amount pending", zap.Int64("amount", req.Amount), zap.String("source", string(req.Source)), zap.String("ecrRef", req.ECRRef))
	return nil
}

func (l *lane) onCancel(why string) error {
	switch l.state {
	case StateIdle:
		return nil
	case StateAwaitingCode:
	default:
		return ErrBusy
	}
	req := *l.pending
	l.pending = nil
	l.stopLaneTimer()
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
	case StateIdle:
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
	req := *l.pending
	o, err := l.t.jr.AddOrder(l.ctx, journal.NewOrder{
		TerminalID: l.t.cfg.TerminalID, Amount: req.Amount, Currency: req.Currency, Channel: wallet.Channel,
		CodeMasked: iotpay.MaskCode(c.Text), CodeHash: hash, Source: string(req.Source),
		ECRRef: req.ECRRef, POSNumber: req.POSNumber,
	}, func(n uint64) string { return OrderNumber(l.t.cfg.TerminalID, n) })
	if errors.Is(err, journal.ErrCodeUsed) {
		l.reject("used", Screen{Kind: ScreenCodeUsed}, c)
		return nil
	}
	if err != nil {
		return err // nothing was sent: the order is not on disk
	}
	l.stopLaneTimer()
	l.pending = nil
	if err := l.move(StateSubmitting); err != nil {
		return err
	}
	l.sale = &sale{order: o, wallet: wallet.Name, maxAttempts: l.t.cfg.PollAttempts}
	l.t.log.Info("order sent", zap.String("mchOrderNo", o.MchOrderNo), zap.Int64("amount", o.Amount),
		zap.String("channel", o.Channel), zap.String("code", o.CodeMasked))
	l.show(Screen{Kind: ScreenProcessing, Amount: o.Amount, Currency: o.Currency, Wallet: wallet.Name})
	l.t.out.beep.put(BeepAccepted)
	create := iotpay.CreateRequest{MchOrderNo: o.MchOrderNo, ChannelID: o.Channel, Currency: o.Currency, Amount: o.Amount, IdentityCode: c.Text}
	l.t.call(l.ctx, "create_order", o.MchOrderNo, func(ctx context.Context) iotpay.Result { return l.t.gw.CreateOrder(ctx, create) })
	return nil
}

// call runs one gateway call off the loop; its reply comes back as an event.
func (t *Terminal) call(ctx context.Context, op, orderNo string, fn func(context.Context) iotpay.Result) {
	t.workers.Add(1)
	go func() {
		defer t.workers.Done()
		start := time.Now()
		res := fn(ctx)
		if t.obs != nil {
			t.obs.GatewayCall(op, res.Outcome, time.Since(start))
		}
		select {
		case t.results <- gatewayReply{op: op, order: orderNo, result: res}:
		case <-ctx.Done():
		}
	}()
}

func (l *lane) query() {
	no := l.sale.order.MchOrderNo
	l.t.call(l.ctx, "query_order", no, func(ctx context.Context) iotpay.Result {
		return l.t.gw.QueryOrder(ctx, iotpay.QueryRequest{MchOrderNo: no})
	})
}

func (l *lane) onReply(r gatewayReply) error {
	s := l.sale
	if s == nil || r.order != s.order.MchOrderNo {
		return nil
	}
	res := r.result
	l.t.log.Info("gateway reply", zap.String("op", r.op), zap.String("mchOrderNo", r.order),
		zap.Stringer("outcome", res.Outcome), zap.Int("status", res.Status), zap.String("message", res.Message()))
	if r.op == "create_order" {
		return l.onCreate(res)
	}
	s.attempts++
	switch res.Outcome {
	case iotpay.OutcomePaid:
		return l.finish(journal.StatePaid, res, "")
	case iotpay.OutcomeFailed:
		msg := res.Message()
		if s.createFail != nil {
			msg = s.createFail.Msg // the decline's own reason beats the query's "cancelled"
		}
		return l.finish(journal.StateDeclined, res, msg)
	case iotpay.OutcomeNotFound:
		if s.notSent {
			return l.finish(journal.StateDeclined, res, "not sent: gateway unreachable")
		}
		if s.createFail != nil {
			return l.finish(journal.StateDeclined, res, s.createFail.Msg)
		}
	case iotpay.OutcomePending:
		if res.Status == iotpay.StatusPaying {
			l.show(Screen{Kind: ScreenConfirmOnPhone, Amount: s.order.Amount, Currency: s.order.Currency, Wallet: s.wallet})
		}
	}
	return l.keepPolling(res)
}

func (l *lane) onCreate(res iotpay.Result) error {
	s := l.sale
	switch res.Outcome {
	case iotpay.OutcomePaid:
		return l.finish(journal.StatePaid, res, "")
	case iotpay.OutcomeFailed:
		// A FAIL reply is confirmed by one query before the sale is
		// declined: the gateway is the judge of what it did.
		s.createFail = res.Err
		l.query()
		return nil
	case iotpay.OutcomePending:
		kind := ScreenProcessing
		if res.Status == iotpay.StatusPaying {
			kind = ScreenConfirmOnPhone
		}
		if err := l.toPolling(res); err != nil || l.sale == nil {
			return err
		}
		l.show(Screen{Kind: kind, Amount: s.order.Amount, Currency: s.order.Currency, Wallet: s.wallet})
	default:
		s.notSent = res.Err != nil && res.Err.NotSent
		if err := l.toPolling(res); err != nil || l.sale == nil {
			return err
		}
		if s.notSent {
			l.show(Screen{Kind: ScreenOffline, Amount: s.order.Amount, Currency: s.order.Currency, Reason: res.Message()})
		}
	}
	l.setLaneTimer(timerNextQuery, l.t.cfg.PollInterval)
	return nil
}

// toPolling records that the order is being followed by query.
func (l *lane) toPolling(res iotpay.Result) error {
	s := l.sale
	if s.order.State == journal.StateSubmitting {
		o, err := l.t.jr.Transition(l.ctx, s.order.MchOrderNo, journal.StateSubmitting, journal.StatePolling,
			journal.Update{PayOrderID: res.PayOrderID, Status: res.Status, Message: res.Message(), NotSent: s.notSent})
		if err != nil {
			if err := l.stateConflict(err); err != nil || l.sale == nil {
				return err
			}
		} else {
			s.order = o
		}
	}
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
	return l.announce(o)
}

func (l *lane) keepPolling(res iotpay.Result) error {
	s := l.sale
	if s.attempts >= s.maxAttempts {
		return l.finish(journal.StateUnconfirmed, res, "not confirmed: "+res.Message())
	}
	if err := l.toPolling(res); err != nil || l.sale == nil {
		return err // nil sale: settled by another process meanwhile
	}
	l.setLaneTimer(timerNextQuery, l.t.cfg.PollInterval)
	return nil
}

// finish journals the sale's end state, then shows and reports it.
func (l *lane) finish(to journal.State, res iotpay.Result, msg string) error {
	// A second try covers an order another process moved meanwhile (from
	// SUBMITTING to POLLING, say) but did not settle.
	for try := 0; try < 2; try++ {
		s := l.sale
		o, err := l.t.jr.Transition(l.ctx, s.order.MchOrderNo, s.order.State, to,
			journal.Update{PayOrderID: res.PayOrderID, Status: res.Status, Message: msg, NotSent: s.notSent})
		if err == nil {
			return l.announce(o)
		}
		if err := l.stateConflict(err); err != nil || l.sale == nil {
			return err
		}
	}
	return l.announce(l.sale.order)
}

// announce shows, beeps and reports a journaled outcome, and frees the lane.
func (l *lane) announce(o journal.Order) error {
	s := l.sale
	l.stopLaneTimer()
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
		l.t.rec.add(o)
	}
	l.t.log.Info("sale finished", zap.String("mchOrderNo", o.MchOrderNo), zap.Stringer("state", o.State),
		zap.String("payOrderId", o.PayOrderID), zap.String("message", o.Message), zap.Bool("recovered", s.recovered))
	if l.t.obs != nil {
		l.t.obs.SaleFinished(o.Channel, o.State)
	}
	l.showResult(scr)
	l.t.out.result.put(resultFromOrder(o))
	if l.state == StateStarting {
		return l.nextRecovery()
	}
	if len(l.recover) > 0 {
		return l.nextRecovery()
	}
	return l.move(StateIdle)
}

// nextRecovery resumes the next open order left by a previous run. An
// order still inside its polling window gets the rest of the window; an
// older one gets one query before it goes to the reconciler.
func (l *lane) nextRecovery() error {
	if len(l.recover) == 0 {
		if l.state != StateIdle {
			if err := l.move(StateIdle); err != nil {
				return err
			}
			if !l.resultOn {
				l.show(Screen{Kind: ScreenIdle})
			}
		}
		return nil
	}
	o := l.recover[0]
	l.recover = l.recover[1:]
	window := time.Duration(l.t.cfg.PollAttempts) * l.t.cfg.PollInterval
	age := l.t.now().Sub(o.CreatedAt)
	left := 1
	if age >= 0 && age < window {
		left = max(1, l.t.cfg.PollAttempts-int(age/l.t.cfg.PollInterval))
	}
	if l.state != StatePolling {
		if err := l.move(StatePolling); err != nil {
			return err
		}
	}
	l.sale = &sale{order: o, wallet: l.t.wal.Name(o.Channel), maxAttempts: left, recovered: true, notSent: o.NotSent}
	l.t.log.Info("resuming order", zap.String("mchOrderNo", o.MchOrderNo), zap.Stringer("state", o.State),
		zap.Duration("age", age), zap.Int("queries", left))
	l.show(Screen{Kind: ScreenRecovering, Amount: o.Amount, Currency: o.Currency})
	l.query()
	return nil
}

// markInterruptedRefunds turns refunds left SENT by a previous run into
// UNKNOWN: the process died between sending and recording the reply, so
// only the operator (IOTPay portal) can tell whether the money went back.
func (t *Terminal) markInterruptedRefunds(ctx context.Context) error {
	refunds, err := t.jr.Refunds(ctx, "")
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
