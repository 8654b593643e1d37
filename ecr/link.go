package ecr

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/scanpay/scanpay/payment"
	"github.com/scanpay/scanpay/scanner"
)

// Terminal is what the link needs from the sale engine.
type Terminal interface {
	RequestSale(ctx context.Context, req payment.SaleRequest) error
	// RefundForECR refunds the last sale with ref (or the last paid one).
	RefundForECR(ctx context.Context, ref string, amount int64) payment.SaleResult
	// LastResult is the journaled result of the newest sale with ref.
	LastResult(ctx context.Context, ref string) (payment.SaleResult, error)
	State() payment.State
}

// Config tunes the link.
type Config struct {
	POSNumber    string        // this terminal's POS number; empty accepts any
	Currency     string        // the terminal's currency, CAD or USD
	AllowRefunds bool          // accept type 2 (refund) requests
	Timeout      time.Duration // byte/frame answer timeout, 3 s
	Tries        int           // ENQ and frame tries, 3
	Logger       *zap.Logger
}

// Conn is a link to the register: a serial port or a TCP connection.
type Conn interface {
	io.ReadWriteCloser
	SetWriteDeadline(time.Time) error
}

// Link plays the terminal side of Concert E+.
type Link struct {
	cfg  Config
	term Terminal
	log  *zap.Logger

	results chan payment.SaleResult

	mu      sync.Mutex
	pending map[string]Request            // A010 requests waiting for their sale's result, by reference
	kept    map[string]payment.SaleResult // results the register has not taken, by reference
}

// NewLink builds a link for term.
func NewLink(cfg Config, term Terminal) *Link {
	if cfg.Timeout <= 0 {
		cfg.Timeout = 3 * time.Second
	}
	if cfg.Tries <= 0 {
		cfg.Tries = 3
	}
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	return &Link{cfg: cfg, term: term, log: cfg.Logger, results: make(chan payment.SaleResult, 64),
		pending: map[string]Request{}, kept: map[string]payment.SaleResult{}}
}

// Result implements payment.ResultSink: the engine's answer for a sale.
func (l *Link) Result(r payment.SaleResult) error {
	if r.Request.Source != payment.SourceECR {
		return nil
	}
	select {
	case l.results <- r:
	default:
		// No connection is draining results: keep it for the next request.
		l.keep(r)
	}
	return nil
}

func (l *Link) keep(r payment.SaleResult) {
	l.mu.Lock()
	l.kept[r.Request.ECRRef] = r
	l.mu.Unlock()
	l.log.Warn("ECR result kept for the register's next request", zap.String("ref", r.Request.ECRRef),
		zap.Stringer("outcome", r.Outcome), zap.String("mchOrderNo", r.MchOrderNo))
}

// Kept returns the result kept for ref, if any (for tests and tools).
func (l *Link) Kept(ref string) (payment.SaleResult, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	r, ok := l.kept[ref]
	return r, ok
}

// session is one connection's protocol state.
type session struct {
	l     *Link
	conn  Conn
	bytes chan byte
	rerr  chan error
}

var errTimeout = errors.New("no answer in time")

// next returns the next byte from the register within the timeout.
func (s *session) next(ctx context.Context, timeout time.Duration) (byte, error) {
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case b := <-s.bytes:
		return b, nil
	case err := <-s.rerr:
		return 0, err
	case <-t.C:
		return 0, errTimeout
	case <-ctx.Done():
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

// Serve runs the protocol on one connection until it fails or ctx ends.
func (l *Link) Serve(ctx context.Context, conn Conn) error {
	s := &session{l: l, conn: conn, bytes: make(chan byte, 256), rerr: make(chan error, 1)}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		buf := make([]byte, 128)
		for {
			n, err := conn.Read(buf)
			for _, b := range buf[:n] {
				select {
				case s.bytes <- b:
				case <-ctx.Done():
					return
				}
			}
			if err != nil {
				s.rerr <- err
				return
			}
		}
	}()
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer func() {
		stop()
		conn.Close()
		wg.Wait()
	}()
	for {
		select {
		case <-ctx.Done():
			return nil
		case err := <-s.rerr:
			return fmt.Errorf("ECR link: %w", err)
		case b := <-s.bytes:
			if b == ENQ {
				if err := s.receive(ctx); err != nil {
					return err
				}
			} // anything else between exchanges is noise
		case r := <-l.results:
			if err := s.deliver(ctx, r); err != nil {
				return err
			}
		}
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
		l.log.Info("ECR request refused: a sale is in progress", zap.Stringer("state", st))
		return s.write(NAK)
	}
	if err := s.write(ACK); err != nil {
		return err
	}
	var req Request
	var fr FrameReader
	got := false
	for tries := 0; tries < l.cfg.Tries && !got; {
		b, err := s.next(ctx, l.cfg.Timeout)
		if errors.Is(err, errTimeout) {
			l.log.Warn("ECR opened an exchange but sent no frame")
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
			if err := s.write(NAK); err != nil {
				return err
			}
		case payload != nil:
			r, perr := ParseRequest(payload)
			if perr != nil {
				tries++
				l.log.Info("ECR request malformed", zap.Error(perr), zap.String("payload", scanner.Printable(string(payload))))
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
		b, err := s.next(ctx, l.cfg.Timeout)
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
	return s.handle(ctx, req)
}

// handle acts on a request and answers it when the answer is due now.
func (s *session) handle(ctx context.Context, req Request) error {
	l := s.l
	ref := req.Ref()
	log := l.log.With(zap.String("ref", ref), zap.Int64("amount", req.Amount), zap.String("type", string(req.Type)))
	l.mu.Lock()
	kept, haveKept := l.kept[ref]
	l.mu.Unlock()
	if haveKept {
		log.Info("ECR asked again: sending the kept result")
		delivered, err := s.sendResult(ctx, req, kept)
		if delivered {
			l.mu.Lock()
			delete(l.kept, ref)
			l.mu.Unlock()
		}
		return err
	}
	refuse := func(why string) error {
		log.Info("ECR request refused", zap.String("why", why))
		_, err := s.sendResult(ctx, req, payment.SaleResult{Outcome: payment.OutcomeRefused, Message: why, Final: true})
		return err
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
	if req.Type == TypeRefund {
		if !l.cfg.AllowRefunds {
			return refuse("refunds from the register are disabled")
		}
		log.Info("ECR refund")
		res := l.term.RefundForECR(ctx, ref, req.Amount)
		_, err := s.sendResult(ctx, req, res)
		return err
	}
	if req.Type == TypeCredit {
		return refuse("credit is not supported")
	}
	if ref != "" {
		// A reference whose sale was approved, or is not confirmed yet, is
		// the register asking again (after a restart, say): answer it from
		// the journal. A new sale there could charge one invoice twice.
		// After a decline the same reference may try again.
		if last, err := l.term.LastResult(ctx, ref); err == nil && last.Outcome != payment.OutcomeRefused {
			log.Info("ECR asked again: answering from the journal", zap.String("mchOrderNo", last.MchOrderNo), zap.Stringer("outcome", last.Outcome))
			_, err := s.sendResult(ctx, req, last)
			return err
		}
	}
	sale := payment.SaleRequest{Amount: req.Amount, Currency: currency, Source: payment.SourceECR, ECRRef: ref, POSNumber: req.POS}
	if !req.Immediate {
		l.mu.Lock()
		l.pending[ref] = req
		l.mu.Unlock()
	}
	if err := l.term.RequestSale(ctx, sale); err != nil {
		l.mu.Lock()
		delete(l.pending, ref)
		l.mu.Unlock()
		return refuse(err.Error())
	}
	log.Info("ECR sale started", zap.Bool("immediate", req.Immediate))
	if req.Immediate {
		// A011: answer now with "not verified"; the outcome is kept for
		// the register's next request with this reference.
		_, err := s.sendResult(ctx, req, payment.SaleResult{Outcome: payment.OutcomeUnknown, Message: "in progress"})
		return err
	}
	return nil
}

// deliver sends a sale's result to the register that asked for it.
func (s *session) deliver(ctx context.Context, r payment.SaleResult) error {
	l := s.l
	ref := r.Request.ECRRef
	l.mu.Lock()
	req, ok := l.pending[ref]
	delete(l.pending, ref)
	l.mu.Unlock()
	if !ok {
		l.keep(r)
		return nil
	}
	delivered, err := s.sendResult(ctx, req, r)
	if !delivered {
		l.keep(r)
	}
	return err
}

// encode builds the result frame for req from the engine's result. Every
// result echoes the request's POS number, amount, mode, currency and
// private field, whatever its status.
func encode(req Request, r payment.SaleResult) []byte {
	status := byte(StatusNotVerified)
	switch r.Outcome {
	case payment.OutcomeApproved:
		status = StatusApproved
	case payment.OutcomeRefused:
		status = StatusRefused
	}
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
func (l *Link) RunSerial(ctx context.Context, port scanner.PortConfig, backoff scanner.Backoff, obs scanner.DeviceObserver) error {
	k := scanner.Keeper{Name: "ecr", Backoff: backoff, Logger: l.log, Observer: obs}
	return k.Run(ctx, func(ctx context.Context, up func()) error {
		f, err := scanner.OpenTTY(port)
		if err != nil {
			return err
		}
		up()
		return l.Serve(ctx, f)
	})
}

// RunTCP serves registers connecting to addr, one connection at a time.
func (l *Link) RunTCP(ctx context.Context, ln net.Listener) error {
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("ECR listener: %w", err)
		}
		l.log.Info("ECR connected", zap.String("remote", c.RemoteAddr().String()))
		err = l.Serve(ctx, c)
		l.log.Info("ECR disconnected", zap.Error(err))
	}
}
