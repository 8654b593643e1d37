package ecr

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/scanpay/scanpay/device"
	"github.com/scanpay/scanpay/device/serial"
	"github.com/scanpay/scanpay/payment"
)

// Terminal is what the link needs from the sale engine.
type Terminal interface {
	RequestSale(ctx context.Context, req payment.SaleRequest) error
	// RefundForECR refunds part of the register's sale, answering a
	// repeated refund from the journal.
	RefundForECR(ctx context.Context, req payment.ECRRefund) payment.SaleResult
	// LastResult is the journaled result of the newest sale with ref.
	LastResult(ctx context.Context, ref string) (payment.SaleResult, error)
	// LastResultFor is that of the newest sale with ref for amount cents.
	LastResultFor(ctx context.Context, ref string, amount int64) (payment.SaleResult, error)
	// Taken notes, across restarts, that the register took an answer that
	// says what happened (a sale's or a refund's): the same request again
	// is then a new one, not a retry.
	Taken(ctx context.Context, r payment.SaleResult)
	State() payment.State
}

// Config tunes the link.
type Config struct {
	POSNumber    string        // this terminal's POS number; empty accepts any
	Currency     string        // the terminal's currency, CAD or USD
	AllowRefunds bool          // accept type 2 (refund) requests
	Timeout      time.Duration // byte/frame answer timeout, 3 s
	Tries        int           // ENQ and frame tries, 3
	// KeepResults is how long a result stays answerable: a request that
	// matches a sale's reference, amount, currency, type and POS number
	// within it is the register asking again; past it, the reference is
	// free for a new sale. Default 10 min.
	KeepResults time.Duration
	// IdleTimeout drops a TCP register that sent nothing for this long, so
	// a dead peer never holds the link. Default 5 min. Serial links never
	// idle out.
	IdleTimeout time.Duration
	// AllowFrom lists the networks a TCP register may connect from; empty
	// means loopback only.
	AllowFrom []netip.Prefix
	Logger    *zap.Logger
	// Now is the wall clock, compared with the journal's order times;
	// nil means time.Now.
	Now func() time.Time
	// OnAnswer, when set, counts every answer the link gives: kind is
	// sale, again, refund, refused or busy; status is the Concert status
	// ('0', '7', '9') or NAK.
	OnAnswer func(kind string, status byte)
}

// Conn is a link to the register: a serial port or a TCP connection.
type Conn interface {
	io.ReadWriteCloser
	SetWriteDeadline(time.Time) error
}

// Link plays the terminal side of Concert E+. A result goes only to the
// request it answers: the session that asked (A010) gets it by ticket; a
// later request gets one only when it matches the sale on a non-blank
// reference, amount, currency, transaction type and POS number, within
// KeepResults, from the journal. A blank reference is never a re-ask.
type Link struct {
	cfg  Config
	term Terminal
	log  *zap.Logger
	now  func() time.Time
	born time.Time // monotonic base for busySince

	tickets atomic.Uint64
	// busySince is the monotonic offset (from born) at which the serving
	// goroutine entered a bounded step (an exchange, a teardown); 0 when it
	// waits for input. Health reads it: a step that outlives its bound is a
	// wedged link.
	busySince atomic.Int64
	peer      atomic.Pointer[string] // who is connected, for health

	mu        sync.Mutex
	pending   map[uint64]*pendingRequest // A010 requests waiting for their sale's result
	delivered *recent                    // sales whose final result the register took
	// seen holds when each register sale's result was made in this run
	// (monotonic), or when the register last asked about it, so a re-ask's
	// age does not depend on a wall clock that may have jumped since.
	// Orders from before a restart fall back to the journal's wall-clock
	// time.
	seen *recent
}

// recentMax bounds what the link remembers of recent sales (see recent).
const recentMax = 1024

type pendingRequest struct {
	results chan payment.SaleResult // the session that asked
}

// NewLink builds a link for term.
func NewLink(cfg Config, term Terminal) *Link {
	if cfg.Timeout <= 0 {
		cfg.Timeout = 3 * time.Second
	}
	if cfg.Tries <= 0 {
		cfg.Tries = 3
	}
	if cfg.KeepResults <= 0 {
		cfg.KeepResults = 10 * time.Minute
	}
	if cfg.IdleTimeout <= 0 {
		cfg.IdleTimeout = 5 * time.Minute
	}
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	now := cfg.Now
	if now == nil {
		now = time.Now
	}
	return &Link{cfg: cfg, term: term, log: cfg.Logger, now: now, born: time.Now(),
		pending: map[uint64]*pendingRequest{}, delivered: newRecent(cfg.KeepResults, recentMax), seen: newRecent(cfg.KeepResults, recentMax)}
}

// exchangeLimit bounds one exchange in either direction: every ENQ and
// frame try answered at the last moment, plus EOT.
func (l *Link) exchangeLimit() time.Duration {
	return time.Duration(2*l.cfg.Tries+3) * l.cfg.Timeout
}

// ErrWedged is Health's answer when the link's goroutine is stuck.
var ErrWedged = errors.New("ECR link not answering")

// Health reports whether the link's serving goroutine is making progress:
// it fails when a step (one exchange, a session's teardown) has run past
// its bound. The watchdog and /healthz use it.
func (l *Link) Health() error {
	since := l.busySince.Load()
	if since == 0 {
		return nil
	}
	if busy := time.Since(l.born) - time.Duration(since); busy > l.exchangeLimit()+5*time.Second {
		return fmt.Errorf("%w: one step has run for %s", ErrWedged, busy.Round(time.Second))
	}
	return nil
}

// Peer is the connected register ("" when none).
func (l *Link) Peer() string {
	if p := l.peer.Load(); p != nil {
		return *p
	}
	return ""
}

func (l *Link) setPeer(p string) { l.peer.Store(&p) }

// busy marks the start of a bounded step; the returned func ends it.
func (l *Link) busy() func() {
	l.busySince.Store(int64(max(time.Since(l.born), 1)))
	return func() { l.busySince.Store(0) }
}

// pause suspends the current step's bound while the link waits on the
// engine for something bounded on its own (a refund at the gateway); the
// returned func starts the step's bound again.
func (l *Link) pause() func() {
	if l.busySince.Swap(0) == 0 {
		return func() {}
	}
	return func() { l.busySince.Store(int64(max(time.Since(l.born), 1))) }
}

func (l *Link) answered(kind string, status byte) {
	if l.cfg.OnAnswer != nil {
		l.cfg.OnAnswer(kind, status)
	}
}

var _ payment.ResultSink = (*Link)(nil)

// Result implements payment.ResultSink: the engine's answer for a sale. It
// goes to the session whose request it answers, and to nobody else: a
// result nobody waits for stays in the journal, where only a matching
// request can find it.
func (l *Link) Result(r payment.SaleResult) error {
	if r.Request.Source != payment.SourceECR {
		return nil
	}
	l.mu.Lock()
	p, ok := l.pending[r.Request.Ticket]
	if ok {
		delete(l.pending, r.Request.Ticket)
	}
	if r.MchOrderNo != "" {
		if _, known := l.seen.get(r.MchOrderNo); !known {
			l.seen.touch(r.MchOrderNo)
		}
	}
	l.mu.Unlock()
	if ok {
		select {
		case p.results <- r:
			return nil
		default: // the session ended meanwhile
		}
	}
	why := "the register can ask again with the same reference"
	if r.Request.ECRRef == "" {
		why = "blank reference: the register cannot ask for it again"
	}
	l.log.Info("ECR result not delivered: no request waits for it; it is in the journal", zap.String("ref", r.Request.ECRRef),
		zap.Stringer("outcome", r.Outcome), zap.String("mchOrderNo", r.MchOrderNo), zap.String("note", why))
	return nil
}

// session is one connection's protocol state.
type session struct {
	l       *Link
	conn    Conn
	idle    time.Duration // 0: never idles out
	chunks  chan []byte   // what the reader got, a read at a time
	pending []byte        // received, not yet consumed
	timer   *time.Timer   // reused by next
	rerr    chan error
	quit    chan struct{} // closed when the session ends: releases the reader
	results chan payment.SaleResult
	reqs    map[uint64]Request // this session's requests waiting for a result, by ticket
}

var errTimeout = errors.New("no answer in time")

// next returns the next byte from the register within the timeout and
// before the exchange's deadline.
func (s *session) next(ctx context.Context, timeout time.Duration) (byte, error) {
	if len(s.pending) > 0 {
		b := s.pending[0]
		s.pending = s.pending[1:]
		return b, nil
	}
	if dl, ok := ctx.Deadline(); ok {
		timeout = min(timeout, time.Until(dl))
	}
	s.timer.Reset(max(timeout, 0))
	defer s.timer.Stop()
	select {
	case chunk := <-s.chunks:
		s.pending = chunk[1:]
		return chunk[0], nil
	case err := <-s.rerr:
		return 0, err
	case <-s.timer.C:
		return 0, errTimeout
	case <-ctx.Done():
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			return 0, errTimeout
		}
		return 0, ctx.Err()
	}
}

func (s *session) write(b ...byte) error {
	if err := s.conn.SetWriteDeadline(time.Now().Add(s.l.cfg.Timeout)); err != nil {
		return err
	}
	_, err := s.conn.Write(b)
	return err
}

// Serve runs the protocol on one serial connection until it fails or ctx
// ends.
func (l *Link) Serve(ctx context.Context, conn Conn) error {
	return l.serve(ctx, conn, 0)
}

// serve runs one session. idle > 0 drops a register silent that long.
func (l *Link) serve(ctx context.Context, conn Conn, idle time.Duration) error {
	s := &session{l: l, conn: conn, idle: idle, chunks: make(chan []byte, 16), rerr: make(chan error, 1), timer: stoppedTimer(),
		quit: make(chan struct{}), results: make(chan payment.SaleResult, 8), reqs: map[uint64]Request{}}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		buf := make([]byte, 256)
		for {
			n, err := conn.Read(buf)
			if n > 0 {
				// One hand-off per read, not per byte.
				select {
				case s.chunks <- append([]byte(nil), buf[:n]...):
				case <-s.quit:
					// The session ended with bytes unread (a register that
					// reset mid-frame): drop them, never block the teardown.
					return
				}
			}
			if err != nil {
				select {
				case s.rerr <- err:
				case <-s.quit:
				}
				return
			}
		}
	}()
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer func() {
		done := l.busy()
		stop()
		close(s.quit)
		conn.Close()
		wg.Wait()
		l.forget(s)
		done()
	}()
	idleT := stoppedTimer()
	defer idleT.Stop()
	resetIdle := func() {
		if s.idle > 0 {
			idleT.Reset(s.idle)
		}
	}
	resetIdle()
	for {
		select {
		case <-ctx.Done():
			return nil
		case err := <-s.rerr:
			return fmt.Errorf("ECR link: %w", err)
		case <-idleT.C:
			return errors.New("ECR register idle: connection dropped")
		case chunk := <-s.chunks:
			s.pending = append(s.pending, chunk...)
			for len(s.pending) > 0 {
				b := s.pending[0]
				s.pending = s.pending[1:]
				if b == ENQ {
					if err := s.receive(ctx); err != nil {
						return err
					}
				} // anything else between exchanges is noise
			}
			resetIdle()
		case r := <-s.results:
			if err := s.deliverPending(ctx, r); err != nil {
				return err
			}
			resetIdle()
		}
	}
}

func stoppedTimer() *time.Timer {
	t := time.NewTimer(time.Hour)
	t.Stop()
	return t
}

// forget drops a finished session's pending requests: their results, when
// they come, stay in the journal for a matching re-ask.
func (l *Link) forget(s *session) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for t := range s.reqs {
		delete(l.pending, t)
	}
}

// receive handles an exchange the register opened with ENQ. It returns an
// error only when the connection itself failed.
func (s *session) receive(ctx context.Context) error {
	l := s.l
	// Any sale in progress, even one still waiting for the customer's code,
	// gets NAK: answering "refused" while that sale may yet be paid could
	// make the register charge the customer another way.
	if st := l.term.State(); st != payment.StateIdle {
		l.log.Info("ECR request refused: the lane is busy", zap.Stringer("state", st))
		l.answered("busy", NAK)
		return s.write(NAK)
	}
	defer l.busy()()
	ectx, cancel := context.WithTimeout(ctx, l.exchangeLimit())
	defer cancel()
	if err := s.write(ACK); err != nil {
		return err
	}
	var req Request
	var fr FrameReader
	got := false
	for tries := 0; tries < l.cfg.Tries && !got; {
		b, err := s.next(ectx, l.cfg.Timeout)
		if errors.Is(err, errTimeout) {
			l.log.Warn("ECR opened an exchange but sent no complete frame")
			return nil
		}
		if err != nil {
			return err
		}
		payload, ferr := fr.Feed(b)
		switch {
		case ferr != nil:
			tries++
			l.log.Info("ECR frame refused", zap.Error(ferr))
			l.answered("frame", NAK)
			if err := s.write(NAK); err != nil {
				return err
			}
		case payload != nil:
			r, perr := ParseRequest(payload)
			if perr != nil {
				tries++
				l.log.Info("ECR request malformed", zap.Error(perr), zap.String("payload", device.Printable(string(payload))))
				l.answered("malformed", NAK)
				if err := s.write(NAK); err != nil {
					return err
				}
				continue
			}
			req, got = r, true
			if err := s.write(ACK); err != nil {
				return err
			}
		}
	}
	if !got {
		return nil
	}
	// The register ends its exchange with EOT; a missing one is logged only.
	for {
		b, err := s.next(ectx, l.cfg.Timeout)
		if err != nil {
			if !errors.Is(err, errTimeout) {
				return err
			}
			l.log.Info("ECR sent no EOT")
			break
		}
		if b == EOT {
			break
		}
	}
	cancel()
	return s.handle(ctx, req)
}

// handle acts on a request and answers it when the answer is due now.
func (s *session) handle(ctx context.Context, req Request) error {
	l := s.l
	ref := req.Ref()
	log := l.log.With(zap.String("ref", ref), zap.Int64("amount", req.Amount), zap.String("type", string(req.Type)), zap.String("pos", req.POS))
	refuse := func(why string) error {
		log.Info("ECR request refused", zap.String("why", why))
		return s.answer(ctx, "refused", req, payment.SaleResult{Outcome: payment.OutcomeRefused, Message: why, Final: true})
	}
	currency, ok := CurrencyCode(req.Currency)
	switch {
	case !ok:
		return refuse("currency " + req.Currency + " not supported")
	case currency != l.cfg.Currency:
		return refuse("currency " + currency + " is not this terminal's")
	case l.cfg.POSNumber != "" && req.POS != l.cfg.POSNumber:
		return refuse("request for POS " + req.POS)
	case req.Amount <= 0:
		return refuse("zero amount")
	}
	switch req.Type {
	case TypeRefund:
		if !l.cfg.AllowRefunds {
			return refuse("refunds from the register are disabled")
		}
		log.Info("ECR refund")
		// The refund waits on the gateway, bounded by the gateway's own
		// timeouts (a refund and a repair query), not an exchange's: the
		// link is not wedged meanwhile.
		resume := l.pause()
		res := l.term.RefundForECR(ctx, payment.ECRRefund{Ref: ref, Amount: req.Amount, Currency: currency, POSNumber: req.POS})
		resume()
		return s.answer(ctx, "refund", req, res)
	case TypeCredit:
		return refuse("credit is not supported")
	}
	if ref == "" && req.Immediate {
		// A011 answers "not verified" at once and a blank reference can
		// never be asked about again: the register would never learn the
		// outcome of a sale it charged. Refused, loudly, before any charge.
		return refuse("immediate answer needs a reference: use A010 or send references")
	}
	if ref != "" {
		last, err := l.term.LastResult(ctx, ref)
		switch {
		case errors.Is(err, payment.ErrNoOrder):
		case err != nil:
			// Never start a sale that could be the second charge of one
			// invoice: without the journal we cannot tell.
			log.Error("ECR request refused: journal unavailable", zap.Error(err))
			return refuse("journal unavailable")
		default:
			switch v := l.reask(req, currency, last); v {
			case reaskAnswer:
				log.Info("ECR asked again: answering from the journal", zap.String("mchOrderNo", last.MchOrderNo), zap.Stringer("outcome", last.Outcome))
				// A register still asking keeps the result answerable: the
				// window runs from its latest question.
				l.mu.Lock()
				l.seen.touch(last.MchOrderNo)
				l.mu.Unlock()
				return s.answer(ctx, "again", req, last)
			case reaskConflict:
				// The reference was reused since for another sale; the
				// request may be the register asking again about an
				// earlier one under it: that one answers, if it matches.
				if m, err := l.term.LastResultFor(ctx, ref, req.Amount); err == nil && m.MchOrderNo != last.MchOrderNo &&
					l.reask(req, currency, m) == reaskAnswer {
					log.Info("ECR asked again about an earlier sale under a reused reference: answering from the journal",
						zap.String("mchOrderNo", m.MchOrderNo), zap.Stringer("outcome", m.Outcome))
					l.mu.Lock()
					l.seen.touch(m.MchOrderNo)
					l.mu.Unlock()
					return s.answer(ctx, "again", req, m)
				}
				log.Warn("ECR reference already used for another sale", zap.String("mchOrderNo", last.MchOrderNo),
					zap.Int64("saleAmount", last.Request.Amount), zap.String("saleCurrency", last.Request.Currency))
				return refuse("reference already used")
			}
		}
	}
	ticket := l.tickets.Add(1)
	sale := payment.SaleRequest{Amount: req.Amount, Currency: currency, Source: payment.SourceECR, ECRRef: ref, POSNumber: req.POS,
		ECRType: string(req.Type), Ticket: ticket}
	if !req.Immediate {
		l.mu.Lock()
		l.pending[ticket] = &pendingRequest{results: s.results}
		l.mu.Unlock()
		s.reqs[ticket] = req
	}
	if err := l.term.RequestSale(ctx, sale); err != nil {
		l.mu.Lock()
		delete(l.pending, ticket)
		l.mu.Unlock()
		delete(s.reqs, ticket)
		return refuse(err.Error())
	}
	// The lane's "amount pending" line carries the request (reference,
	// POS, type, ticket); only the answer-at-once mode is worth its own.
	if req.Immediate {
		log.Info("ECR sale started: answering at once (A011), the register asks again for the outcome", zap.Uint64("ticket", ticket))
	} else {
		log.Debug("ECR sale started", zap.Uint64("ticket", ticket))
	}
	if req.Immediate {
		// A011: answer now with "not verified"; the register gets the
		// outcome by asking again with the same request.
		return s.answer(ctx, "sale", req, payment.SaleResult{Outcome: payment.OutcomeUnknown, Message: "in progress"})
	}
	return nil
}

type reaskVerdict int

const (
	reaskNewSale  reaskVerdict = iota // unrelated, expired, declined or already taken: a new sale
	reaskAnswer                       // the register asking again: answer from the journal
	reaskConflict                     // the reference names another recent sale: refuse
)

// reask decides what a sale request with a non-blank reference means,
// given the newest journaled sale with that reference.
func (l *Link) reask(req Request, currency string, last payment.SaleResult) reaskVerdict {
	if last.At.IsZero() {
		return reaskNewSale
	}
	l.mu.Lock()
	made, known := l.seen.get(last.MchOrderNo)
	l.mu.Unlock()
	// The sale's age on the monotonic clock when it was made in this run;
	// else from the journal's wall-clock time, where an order stamped in
	// the future (the clock went back since) counts as recent.
	age := l.now().Sub(last.At)
	if known {
		age = time.Since(made)
	}
	if age > l.cfg.KeepResults {
		return reaskNewSale
	}
	lastType := last.Request.ECRType
	if last.Request.Amount != req.Amount || last.Request.Currency != currency || last.Request.POSNumber != req.POS ||
		lastType != "" && lastType != string(req.Type) {
		return reaskConflict
	}
	if last.Outcome == payment.OutcomeRefused {
		return reaskNewSale // declined or cancelled: the register may try again
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, taken := l.delivered.get(last.MchOrderNo); taken || last.Taken {
		// The register took this sale's final result already: the same
		// request again is a new sale (a register whose references repeat).
		return reaskNewSale
	}
	return reaskAnswer
}

// deliverPending sends the result of one of this session's requests.
func (s *session) deliverPending(ctx context.Context, r payment.SaleResult) error {
	req, ok := s.reqs[r.Request.Ticket]
	if !ok {
		return nil
	}
	delete(s.reqs, r.Request.Ticket)
	return s.answer(ctx, "sale", req, r)
}

// answer sends r to the register for req, counts it, and remembers a
// final result the register took.
func (s *session) answer(ctx context.Context, kind string, req Request, r payment.SaleResult) error {
	delivered, err := s.sendResult(ctx, req, r)
	status := statusOf(r)
	s.l.answered(kind, status)
	// Only a sale's own final result counts as taken: a refund's answer
	// names the sale too, but says nothing about the sale's result.
	// Noted before the next request is read: a restart cannot then answer
	// a register whose references repeat with this sale's result, or take
	// a new refund for a retry of an old one.
	switch {
	case !delivered:
	case r.Final && r.MchOrderNo != "" && (kind == "sale" || kind == "again"):
		s.l.mu.Lock()
		s.l.delivered.touch(r.MchOrderNo)
		s.l.mu.Unlock()
		s.l.term.Taken(context.WithoutCancel(ctx), r)
	case kind == "refund" && r.RefundNo != "":
		s.l.term.Taken(context.WithoutCancel(ctx), r)
	}
	if !delivered && r.MchOrderNo != "" {
		s.l.log.Warn("ECR did not take the result; it stays answerable for a matching request", zap.String("ref", req.Ref()),
			zap.String("mchOrderNo", r.MchOrderNo), zap.Stringer("outcome", r.Outcome))
	}
	return err
}

func statusOf(r payment.SaleResult) byte {
	switch r.Outcome {
	case payment.OutcomeApproved:
		return StatusApproved
	case payment.OutcomeRefused:
		return StatusRefused
	}
	return StatusNotVerified
}

// encode builds the result frame for req from the engine's result. Every
// result echoes the request's POS number, amount, mode, currency and
// private field, whatever its status.
func encode(req Request, r payment.SaleResult) []byte {
	status := statusOf(r)
	res := Result{POS: req.POS, Status: status, Amount: req.Amount, Mode: req.Mode, Currency: req.Currency,
		Private: req.Private, Full: req.FullAnswer}
	if status == StatusApproved {
		res.Report = Report(r.Channel, r.PayOrderID)
	}
	return Frame(res.Encode())
}

// sendResult runs a terminal-initiated exchange: ENQ (3 tries, Timeout
// apart) → ACK, frame (resent on NAK, 3 tries) → ACK, EOT. delivered is
// false when the register did not take it; err only when the connection
// failed.
func (s *session) sendResult(ctx context.Context, req Request, r payment.SaleResult) (delivered bool, err error) {
	l := s.l
	defer l.busy()()
	ctx, cancel := context.WithTimeout(ctx, l.exchangeLimit())
	defer cancel()
	frame := encode(req, r)
	ack := func() (bool, error) {
		for {
			b, err := s.next(ctx, l.cfg.Timeout)
			if errors.Is(err, errTimeout) {
				return false, nil
			}
			if err != nil {
				return false, err
			}
			switch b {
			case ACK:
				return true, nil
			case NAK:
				return false, nil
			}
		}
	}
	opened := false
	for try := 0; try < l.cfg.Tries && !opened; try++ {
		if err := s.write(ENQ); err != nil {
			return false, err
		}
		if opened, err = ack(); err != nil {
			return false, err
		}
	}
	if !opened {
		l.log.Warn("ECR did not answer ENQ", zap.String("ref", req.Ref()))
		return false, nil
	}
	for try := 0; try < l.cfg.Tries; try++ {
		if err := s.write(frame...); err != nil {
			return false, err
		}
		ok, err := ack()
		if err != nil {
			return false, err
		}
		if ok {
			l.log.Info("ECR result delivered", zap.String("ref", req.Ref()), zap.String("status", string(frame[3])))
			return true, s.write(EOT)
		}
	}
	l.log.Warn("ECR did not take the result frame", zap.String("ref", req.Ref()))
	return false, s.write(EOT)
}

// RunSerial serves the register on a serial port, reopening it after an
// unplug.
func (l *Link) RunSerial(ctx context.Context, port serial.PortConfig, backoff device.Backoff, obs device.Observer) error {
	k := device.Keeper{Name: "ecr", Backoff: backoff, Logger: l.log, Observer: obs}
	return k.Run(ctx, func(ctx context.Context, up func()) error {
		f, err := serial.OpenTTY(port)
		if err != nil {
			return err
		}
		up()
		l.setPeer(port.Path)
		defer l.setPeer("")
		return l.Serve(ctx, f)
	})
}

// Allowed reports whether a TCP peer may connect: loopback when AllowFrom
// is empty, else any listed network.
func (l *Link) Allowed(addr net.Addr) bool {
	ap, err := netip.ParseAddrPort(addr.String())
	if err != nil {
		return false
	}
	ip := ap.Addr().Unmap()
	if len(l.cfg.AllowFrom) == 0 {
		return ip.IsLoopback()
	}
	for _, p := range l.cfg.AllowFrom {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}

// RunTCP serves registers connecting to ln, one at a time. A new allowed
// connection replaces the current one (a register that reconnects after a
// reset must not wait for its dead session to time out); a silent one is
// dropped after IdleTimeout; peers outside AllowFrom are refused at once.
func (l *Link) RunTCP(ctx context.Context, ln net.Listener) error {
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()
	var cur struct {
		cancel context.CancelFunc
		done   chan struct{}
	}
	endCurrent := func() {
		if cur.cancel != nil {
			cur.cancel()
			<-cur.done
			cur.cancel = nil
		}
	}
	defer endCurrent()
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return fmt.Errorf("ECR listener: %w", err)
		}
		remote := c.RemoteAddr().String()
		if !l.Allowed(c.RemoteAddr()) {
			l.log.Warn("ECR connection refused: address not in ecr.allow_from", zap.String("remote", remote))
			l.answered("refused", NAK)
			c.Close()
			continue
		}
		if cur.cancel != nil {
			l.log.Info("ECR reconnected: replacing the previous connection", zap.String("remote", remote))
		}
		endCurrent()
		sctx, cancel := context.WithCancel(ctx)
		done := make(chan struct{})
		cur.cancel, cur.done = cancel, done
		l.log.Info("ECR connected", zap.String("remote", remote))
		l.setPeer(remote)
		go func() {
			defer close(done)
			err := l.serve(sctx, c, l.cfg.IdleTimeout)
			l.setPeer("")
			l.log.Info("ECR disconnected", zap.String("remote", remote), zap.Error(err))
		}()
	}
}
