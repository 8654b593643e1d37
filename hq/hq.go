// Package hq is head office: a durable JetStream consumer that writes every
// lane's events into PostgreSQL (idempotent on lane and sequence, each
// order moving only forward in its lane's sequence, acknowledged only
// after the commit), a subscriber that keeps each lane's last heartbeat,
// the fleet reports, Prometheus metrics, and an optional embedded NATS
// server for a shop that runs head office on one PC.
package hq

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"

	"github.com/scanpay/scanpay/fleet"
	"github.com/scanpay/scanpay/fleet/event"
)

// Config configures head office's consumer.
type Config struct {
	Link   fleet.Link
	Prefix string // subject prefix; default event.Prefix
	// Stream is the JetStream stream holding lane events (default SCANPAY).
	// Head office creates it, or updates its settings, at start unless
	// ManageStream is false (then an administrator owns it).
	Stream       string
	ManageStream bool
	Replicas     int           // 1, or 3 on a cluster
	MaxAge       time.Duration // how long the stream keeps events (default 30 days)
	Durable      string        // the consumer's name (default hq)
	Batch        int           // events per PostgreSQL transaction (default 256)
	AckWait      time.Duration // redelivery after this without an ack (default 30 s)
	SilentAfter  time.Duration // a lane is silent after this without a heartbeat (default 3 min)
	Logger       *zap.Logger
	Metrics      *Metrics // nil: none
	// InProcess, when set, connects to this embedded server directly.
	InProcess nats.InProcessConnProvider
}

func (c *Config) defaults() {
	if c.Prefix == "" {
		c.Prefix = event.Prefix
	}
	if c.Stream == "" {
		c.Stream = "SCANPAY"
	}
	if c.Replicas <= 0 {
		c.Replicas = 1
	}
	if c.MaxAge <= 0 {
		c.MaxAge = 30 * 24 * time.Hour
	}
	if c.Durable == "" {
		c.Durable = "hq"
	}
	if c.Batch <= 0 {
		c.Batch = 256
	}
	if c.AckWait <= 0 {
		c.AckWait = 30 * time.Second
	}
	if c.SilentAfter <= 0 {
		c.SilentAfter = 3 * time.Minute
	}
	if c.Logger == nil {
		c.Logger = zap.NewNop()
	}
	if c.Link.Name == "" {
		c.Link.Name = "scanpay hq"
	}
}

// HQ consumes lane events and heartbeats into a Store.
type HQ struct {
	cfg   Config
	store *Store
	log   *zap.Logger
}

// New makes head office over an open store.
func New(cfg Config, store *Store) *HQ {
	cfg.defaults()
	return &HQ{cfg: cfg, store: store, log: cfg.Logger}
}

// Run consumes until ctx ends. NATS or PostgreSQL being unreachable is
// retried with backoff; only bad local settings return an error.
func (h *HQ) Run(ctx context.Context) error {
	var opts []nats.Option
	if h.cfg.InProcess != nil && len(h.cfg.Link.Servers) == 0 {
		opts = []nats.Option{nats.Name(h.cfg.Link.Name), nats.InProcessServer(h.cfg.InProcess), nats.MaxReconnects(-1)}
	} else {
		var err error
		if opts, err = h.cfg.Link.Options(); err != nil {
			return fmt.Errorf("hq: %w", err)
		}
	}
	opts = append(opts,
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) { h.log.Warn("NATS link down", zap.Error(err)) }),
		nats.ReconnectHandler(func(*nats.Conn) { h.log.Info("NATS link up again") }),
	)
	nc, err := nats.Connect(strings.Join(h.cfg.Link.Servers, ","), opts...)
	if err != nil {
		return fmt.Errorf("hq: connect: %w", err)
	}
	defer nc.Close()

	var wg sync.WaitGroup
	defer wg.Wait()
	sub, err := nc.QueueSubscribe(event.HeartbeatSubject(h.cfg.Prefix, "*"), "hq", func(m *nats.Msg) { h.heartbeat(ctx, m) })
	if err != nil {
		return fmt.Errorf("hq: heartbeats: %w", err)
	}
	defer sub.Unsubscribe()
	if h.cfg.Metrics != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			h.watchLanes(ctx)
		}()
	}

	js, err := jetstream.New(nc)
	if err != nil {
		return fmt.Errorf("hq: %w", err)
	}
	retry := newBackoff(250*time.Millisecond, 10*time.Second)
	for ctx.Err() == nil {
		err := h.consume(ctx, js)
		if ctx.Err() != nil {
			break
		}
		h.log.Warn("consumer interrupted; retrying", zap.Error(err))
		if !retry.wait(ctx) {
			break
		}
	}
	return nil
}

// ensure creates or updates the stream and the durable consumer.
func (h *HQ) ensure(ctx context.Context, js jetstream.JetStream) (jetstream.Consumer, error) {
	c := h.cfg
	if c.ManageStream {
		sc := jetstream.StreamConfig{Name: c.Stream, Subjects: []string{c.Prefix + ".lane.*.events"}, Storage: jetstream.FileStorage,
			Replicas: c.Replicas, MaxAge: c.MaxAge, Duplicates: 10 * time.Minute, Retention: jetstream.LimitsPolicy,
			Discard: jetstream.DiscardOld, MaxMsgSize: int32(event.MaxSize * 2)}
		if _, err := js.CreateOrUpdateStream(ctx, sc); err != nil {
			return nil, fmt.Errorf("stream %s: %w", c.Stream, err)
		}
	}
	cons, err := js.CreateOrUpdateConsumer(ctx, c.Stream, jetstream.ConsumerConfig{Durable: c.Durable, AckPolicy: jetstream.AckExplicitPolicy,
		DeliverPolicy: jetstream.DeliverAllPolicy, AckWait: c.AckWait, MaxAckPending: c.Batch * 8,
		FilterSubject: c.Prefix + ".lane.*.events", Replicas: c.Replicas})
	if err != nil {
		return nil, fmt.Errorf("consumer %s: %w", c.Durable, err)
	}
	return cons, nil
}

// consume runs the durable consumer until ctx ends or the subscription
// fails.
func (h *HQ) consume(ctx context.Context, js jetstream.JetStream) error {
	// A short deadline: while the cluster elects its leaders a request can
	// go unanswered; asking again is quicker than waiting long.
	cctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	cons, err := h.ensure(cctx, js)
	cancel()
	if err != nil {
		return err
	}
	// Short pull expiry and heartbeats: when the consumer's leader moves
	// (a node died), pulling resumes within seconds instead of half a minute.
	it, err := cons.Messages(jetstream.PullMaxMessages(h.cfg.Batch*2), jetstream.PullExpiry(3*time.Second), jetstream.PullHeartbeat(time.Second))
	if err != nil {
		return err
	}
	defer it.Stop()
	h.log.Info("consuming lane events", zap.String("stream", h.cfg.Stream), zap.String("consumer", h.cfg.Durable))
	retry := newBackoff(250*time.Millisecond, 10*time.Second)
	for {
		first, err := it.Next(jetstream.NextContext(ctx))
		if err != nil {
			return err
		}
		msgs := []jetstream.Msg{first}
		// Take what is already here, up to a batch, without waiting long.
		for len(msgs) < h.cfg.Batch {
			m, err := it.Next(jetstream.NextMaxWait(2 * time.Millisecond))
			if err != nil {
				break
			}
			msgs = append(msgs, m)
		}
		good, evs := h.validate(msgs)
		for !h.apply(ctx, good, evs) {
			if !retry.wait(ctx) {
				return ctx.Err()
			}
		}
		retry.reset()
	}
}

// validate splits a batch into good events and rejected messages, which it
// terminates.
func (h *HQ) validate(msgs []jetstream.Msg) ([]jetstream.Msg, []event.Event) {
	var good []jetstream.Msg
	var evs []event.Event
	for _, msg := range msgs {
		lane, _, ok := event.LaneOf(h.cfg.Prefix, msg.Subject())
		if !ok {
			h.reject(msg, msg.Subject(), fmt.Errorf("%w: subject %q", event.ErrInvalid, msg.Subject()))
			continue
		}
		e, err := event.Parse(msg.Data(), lane)
		if err != nil {
			h.reject(msg, msg.Subject(), err)
			continue
		}
		if id := msg.Headers().Get(jetstream.MsgIDHeader); id != "" && id != event.MsgID(e.Lane, e.Seq) {
			h.reject(msg, msg.Subject(), fmt.Errorf("%w: message id %q for event %s", event.ErrInvalid, id, event.MsgID(e.Lane, e.Seq)))
			continue
		}
		good = append(good, msg)
		evs = append(evs, e)
	}
	return good, evs
}

// apply writes the events in one transaction and acknowledges them after
// the commit. It returns false when the database failed (nothing
// acknowledged; try again).
func (h *HQ) apply(ctx context.Context, good []jetstream.Msg, evs []event.Event) bool {
	m := h.cfg.Metrics
	if len(evs) == 0 {
		return true
	}
	start := time.Now()
	fresh, err := h.store.Apply(ctx, evs)
	if err != nil {
		if ctx.Err() == nil {
			h.log.Error("cannot write events to PostgreSQL; they stay in the stream", zap.Error(err), zap.Int("events", len(evs)))
			if m != nil {
				m.dbErrors.Inc()
			}
		}
		return false
	}
	now := time.Now()
	h.log.Debug("events written", zap.Int("events", len(evs)), zap.Int("new", fresh), zap.Duration("took", now.Sub(start)),
		zap.Duration("lag", now.Sub(evs[0].At)))
	for _, msg := range good {
		// After the commit: a lost ack only means a redelivery, which the
		// store ignores.
		_ = msg.Ack()
	}
	if m != nil {
		m.applySeconds.Observe(now.Sub(start).Seconds())
		m.events.WithLabelValues("applied").Add(float64(fresh))
		m.events.WithLabelValues("duplicate").Add(float64(len(evs) - fresh))
		for _, e := range evs {
			m.lag.Observe(now.Sub(e.At).Seconds())
		}
	}
	return true
}

// reject drops a bad message for good: logged, counted, terminated so it is
// never redelivered, and nothing else stops.
func (h *HQ) reject(msg jetstream.Msg, subject string, err error) {
	h.log.Warn("event rejected", zap.String("subject", subject), zap.Int("bytes", len(msg.Data())),
		zap.String("reason", event.Reason(err)), zap.Error(err))
	if h.cfg.Metrics != nil {
		h.cfg.Metrics.rejected.WithLabelValues(event.Reason(err)).Inc()
	}
	_ = msg.Term()
}

func (h *HQ) heartbeat(ctx context.Context, m *nats.Msg) {
	lane, _, ok := event.LaneOf(h.cfg.Prefix, m.Subject)
	var hb event.Heartbeat
	var err error
	if !ok {
		err = fmt.Errorf("%w: subject %q", event.ErrInvalid, m.Subject)
	} else {
		hb, err = event.ParseHeartbeat(m.Data, lane)
	}
	if err != nil {
		h.log.Warn("heartbeat rejected", zap.String("subject", m.Subject), zap.Int("bytes", len(m.Data)),
			zap.String("reason", event.Reason(err)), zap.Error(err))
		if h.cfg.Metrics != nil {
			h.cfg.Metrics.rejected.WithLabelValues(event.Reason(err)).Inc()
		}
		return
	}
	hctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := h.store.Heartbeat(hctx, hb); err != nil && ctx.Err() == nil {
		h.log.Warn("heartbeat not stored", zap.String("lane", hb.Lane), zap.Error(err))
	}
}

// watchLanes refreshes the per-lane gauges from the database.
func (h *HQ) watchLanes(ctx context.Context) {
	tick := time.NewTicker(10 * time.Second)
	defer tick.Stop()
	for {
		lctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		lanes, err := h.store.Lanes(lctx, time.Now(), h.cfg.SilentAfter)
		cancel()
		if err == nil {
			h.cfg.Metrics.setLanes(lanes)
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// backoff is a capped, jittered, doubling delay.
type backoff struct {
	min, max, next time.Duration
}

func newBackoff(lo, hi time.Duration) *backoff { return &backoff{min: lo, max: hi, next: lo} }

func (b *backoff) reset() { b.next = b.min }

// wait sleeps for the next delay; false when ctx ended first.
func (b *backoff) wait(ctx context.Context) bool {
	d := b.next - b.next/5 + time.Duration(rand.Int64N(int64(b.next)/5+1))
	b.next = min(b.next*2, b.max)
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
