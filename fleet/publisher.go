// Package fleet is the lane side of the fleet link: a publisher that sends
// the journal's outbox to NATS JetStream, in order, on the lane's own
// subject, each event de-duplicated by its Nats-Msg-Id (lane + sequence),
// and deletes what JetStream acknowledged, in batches, on a connection of
// its own. Sales never wait for it: when NATS is down the events wait in
// the outbox (bounded by the journal) and the link reconnects with backoff.
// It also sends a heartbeat every minute.
package fleet

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"

	"github.com/scanpay/scanpay/fleet/event"
	"github.com/scanpay/scanpay/payment/journal"
)

// Outbox is the journal's outbox as the publisher uses it;
// *journal.Outbox implements it.
type Outbox interface {
	Pending(ctx context.Context, after uint64, limit int) ([]journal.Pending, error)
	Ack(ctx context.Context, seq uint64) error
	Stats(ctx context.Context) (journal.OutboxStats, error)
}

var _ Outbox = (*journal.Outbox)(nil)

// Status is the lane's health for a heartbeat.
type Status struct {
	State   string
	Devices map[string]bool
}

// Observer is told about the link for metrics; methods must be cheap.
type Observer interface {
	FleetBacklog(events int64, oldest time.Duration, dropped int64)
	FleetPublished(n int)
	FleetConnected(up bool)
}

// Config configures a Publisher.
type Config struct {
	Lane   string
	Link   Link
	Prefix string // subject prefix; default event.Prefix
	Stream string // the stream that must store the events ("" = any)
	// Batch is the most events in flight at once (default 256).
	Batch int
	// AckWait bounds the wait for a batch's acknowledgements (default 10 s).
	AckWait time.Duration
	// Heartbeat is the heartbeat interval (default 1 min).
	Heartbeat time.Duration
	// Poll is how often the outbox is read without a Nudge, for events
	// written by other processes such as scanpay refund (default 2 s).
	Poll time.Duration
	// RetryMin and RetryMax bound the backoff after a failed batch
	// (defaults 500 ms and 30 s).
	RetryMin, RetryMax time.Duration
	Version            string
	Status             func() Status // nil: state and devices unknown
	Observer           Observer
	Logger             *zap.Logger
}

// Publisher sends a lane's outbox to JetStream.
type Publisher struct {
	cfg   Config
	out   Outbox
	log   *zap.Logger
	nudge chan struct{}
	// up and hbUp are signalled on every (re)connect: the publishing loop
	// and the heartbeat each have their own.
	up, hbUp chan struct{}
}

// New checks cfg and makes a publisher; Run runs it.
func New(cfg Config, out Outbox) (*Publisher, error) {
	if !event.ValidLane(cfg.Lane) {
		return nil, fmt.Errorf("fleet: lane %q must be 1–12 letters, digits or _", cfg.Lane)
	}
	if cfg.Prefix == "" {
		cfg.Prefix = event.Prefix
	}
	if cfg.Batch <= 0 {
		cfg.Batch = 256
	}
	if cfg.AckWait <= 0 {
		cfg.AckWait = 10 * time.Second
	}
	if cfg.Heartbeat <= 0 {
		cfg.Heartbeat = time.Minute
	}
	if cfg.Poll <= 0 {
		cfg.Poll = 2 * time.Second
	}
	if cfg.RetryMin <= 0 {
		cfg.RetryMin = 500 * time.Millisecond
	}
	if cfg.RetryMax < cfg.RetryMin {
		cfg.RetryMax = max(cfg.RetryMin, 30*time.Second)
	}
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	if cfg.Link.Name == "" {
		cfg.Link.Name = "scanpay lane " + cfg.Lane
	}
	if cfg.Link.InboxPrefix == "" {
		cfg.Link.InboxPrefix = "_INBOX_" + cfg.Lane
	}
	if _, err := cfg.Link.Options(); err != nil {
		return nil, fmt.Errorf("fleet: %w", err)
	}
	return &Publisher{cfg: cfg, out: out, log: cfg.Logger, nudge: make(chan struct{}, 1), up: make(chan struct{}, 1), hbUp: make(chan struct{}, 1)}, nil
}

// Nudge tells the publisher the outbox has new events. It never blocks;
// the daemon calls it after each journal commit.
func (p *Publisher) Nudge() {
	select {
	case p.nudge <- struct{}{}:
	default:
	}
}

// Run connects and publishes until ctx ends. It returns an error only when
// it cannot start (bad TLS or credentials files); NATS being unreachable is
// retried for ever.
func (p *Publisher) Run(ctx context.Context) error {
	opts, err := p.cfg.Link.Options()
	if err != nil {
		return fmt.Errorf("fleet: %w", err)
	}
	var mu sync.Mutex
	connected := false
	setUp := func(up bool, why string, err error) {
		mu.Lock()
		changed := connected != up
		connected = up
		mu.Unlock()
		if !changed {
			return
		}
		if p.cfg.Observer != nil {
			p.cfg.Observer.FleetConnected(up)
		}
		if up {
			p.log.Info("fleet link up", zap.String("why", why))
			for _, c := range []chan struct{}{p.up, p.hbUp} {
				select {
				case c <- struct{}{}:
				default:
				}
			}
			return
		}
		p.log.Warn("fleet link down; events wait in the outbox", zap.String("why", why), zap.Error(err))
	}
	opts = append(opts,
		nats.ConnectHandler(func(*nats.Conn) { setUp(true, "connected", nil) }),
		nats.ReconnectHandler(func(*nats.Conn) { setUp(true, "reconnected", nil) }),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) { setUp(false, "disconnected", err) }),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			// Permission violations land here: a lane publishing outside its
			// subjects is a configuration error worth a line each time.
			p.log.Warn("fleet link error", zap.Error(err))
		}),
	)
	nc, err := nats.Connect(strings.Join(p.cfg.Link.Servers, ","), opts...)
	if err != nil {
		return fmt.Errorf("fleet: connect: %w", err)
	}
	defer nc.Close()
	if nc.IsConnected() {
		setUp(true, "connected", nil)
	}
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(p.cfg.Batch), jetstream.WithPublishAsyncTimeout(p.cfg.AckWait))
	if err != nil {
		return fmt.Errorf("fleet: %w", err)
	}

	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		p.heartbeats(ctx, nc)
	}()
	defer wg.Wait()

	var acked uint64 // highest sequence JetStream acknowledged
	retry := p.cfg.RetryMin
	poll := time.NewTicker(p.cfg.Poll)
	defer poll.Stop()
	failing := false
	for ctx.Err() == nil {
		var batch []journal.Pending
		if nc.IsConnected() {
			batch, err = p.out.Pending(ctx, acked, p.cfg.Batch)
			if err != nil && ctx.Err() == nil {
				p.log.Error("fleet: cannot read the outbox", zap.Error(err))
			}
		}
		if len(batch) == 0 || err != nil {
			p.report(ctx)
			select {
			case <-ctx.Done():
			case <-p.nudge:
			case <-p.up:
			case <-poll.C:
			}
			continue
		}
		top, err := p.publish(ctx, js, batch)
		if top > acked {
			if aerr := p.out.Ack(ctx, top); aerr != nil && ctx.Err() == nil {
				// Not fatal: the events are sent again and de-duplicated.
				p.log.Warn("fleet: cannot mark events sent", zap.Error(aerr))
			}
			acked = top
			if p.cfg.Observer != nil {
				p.cfg.Observer.FleetPublished(countUpTo(batch, top))
			}
		}
		if err == nil {
			if failing {
				p.log.Info("fleet: publishing again", zap.Uint64("acked", acked))
				failing = false
			}
			retry = p.cfg.RetryMin
			continue
		}
		if ctx.Err() != nil {
			break
		}
		if !failing {
			p.log.Warn("fleet: publish failed; retrying with backoff", zap.Error(err), zap.Uint64("acked", acked))
			failing = true
		}
		p.report(ctx)
		wait := retry - retry/5 + time.Duration(rand.Int64N(int64(retry)/5+1))
		retry = min(retry*2, p.cfg.RetryMax)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
		case <-t.C:
		case <-p.up:
			retry = p.cfg.RetryMin
		}
		t.Stop()
	}
	return nil
}

// publish sends a batch asynchronously, in order, and waits for the
// acknowledgements. It returns the highest sequence up to which every event
// was acknowledged (the batch's prefix), and the first failure.
func (p *Publisher) publish(ctx context.Context, js jetstream.JetStream, batch []journal.Pending) (uint64, error) {
	subject := event.EventsSubject(p.cfg.Prefix, p.cfg.Lane)
	futures := make([]jetstream.PubAckFuture, 0, len(batch))
	var sendErr error
	for _, ev := range batch {
		opts := []jetstream.PublishOpt{jetstream.WithMsgID(event.MsgID(p.cfg.Lane, ev.Seq))}
		if p.cfg.Stream != "" {
			opts = append(opts, jetstream.WithExpectStream(p.cfg.Stream))
		}
		f, err := js.PublishAsync(subject, ev.Event, opts...)
		if err != nil {
			sendErr = fmt.Errorf("publish %d: %w", ev.Seq, err)
			break
		}
		futures = append(futures, f)
	}
	var top uint64
	timeout := time.NewTimer(p.cfg.AckWait + time.Second)
	defer timeout.Stop()
	for i, f := range futures {
		select {
		case <-f.Ok():
			top = batch[i].Seq
			continue
		case err := <-f.Err():
			return top, errors.Join(fmt.Errorf("event %d not stored: %w", batch[i].Seq, err), sendErr)
		case <-ctx.Done():
			return top, ctx.Err()
		case <-timeout.C:
			return top, errors.Join(fmt.Errorf("event %d: no acknowledgement", batch[i].Seq), sendErr)
		}
	}
	return top, sendErr
}

func countUpTo(batch []journal.Pending, top uint64) int {
	n := 0
	for _, ev := range batch {
		if ev.Seq <= top {
			n++
		}
	}
	return n
}

// report updates the backlog metric.
func (p *Publisher) report(ctx context.Context) {
	if p.cfg.Observer == nil {
		return
	}
	s, err := p.out.Stats(ctx)
	if err != nil {
		return
	}
	var age time.Duration
	if !s.Oldest.IsZero() {
		age = time.Since(s.Oldest)
	}
	p.cfg.Observer.FleetBacklog(s.Backlog, age, s.Dropped)
}

// Heartbeat builds the lane's heartbeat now.
func (p *Publisher) Heartbeat(ctx context.Context) event.Heartbeat {
	hb := event.Heartbeat{V: event.Version, Lane: p.cfg.Lane, At: time.Now().UTC().Truncate(time.Millisecond), Version: p.cfg.Version,
		State: "UNKNOWN", Devices: map[string]bool{}}
	if p.cfg.Status != nil {
		st := p.cfg.Status()
		hb.State = st.State
		for k, v := range st.Devices {
			hb.Devices[k] = v
		}
	}
	if s, err := p.out.Stats(ctx); err == nil {
		hb.Backlog, hb.Dropped, hb.LastSeq = s.Backlog, s.Dropped, s.LastSeq
		if !s.Oldest.IsZero() {
			t := s.Oldest.UTC()
			hb.Oldest = &t
		}
	}
	return hb
}

// heartbeats publishes a heartbeat at once and then every interval, on
// core NATS: a missed one is simply replaced by the next.
func (p *Publisher) heartbeats(ctx context.Context, nc *nats.Conn) {
	subject := event.HeartbeatSubject(p.cfg.Prefix, p.cfg.Lane)
	tick := time.NewTicker(p.cfg.Heartbeat)
	defer tick.Stop()
	for {
		if nc.IsConnected() {
			data, err := json.Marshal(p.Heartbeat(ctx))
			if err == nil {
				err = nc.Publish(subject, data)
			}
			if err != nil && ctx.Err() == nil {
				p.log.Debug("heartbeat not sent", zap.Error(err))
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		case <-p.hbUp: // say hello at once after a reconnect
		}
	}
}
