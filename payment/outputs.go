package payment

import (
	"sync"
	"time"

	"go.uber.org/zap"
)

// outputs hands screens, beeps and results to their sinks from goroutines
// of their own, so a dead or slow device never delays a sale. Screens are
// latest-wins (an intermediate screen may be skipped); beeps are dropped
// when a backlog builds up; results are queued and never dropped.
type outputs struct {
	log     *zap.Logger
	obs     Observer
	instant InstantScreenSink // called by the lane itself (no mailbox)
	screen  *mailbox[Screen]
	beep    *mailbox[Beep]
	result  *mailbox[SaleResult]
	wg      sync.WaitGroup
}

func newOutputs(log *zap.Logger, obs Observer, s ScreenSink, b BeepSink, r ResultSink) *outputs {
	o := &outputs{log: log, obs: obs}
	o.screen = newMailbox[Screen](1)
	o.beep = newMailbox[Beep](4)
	o.result = newMailbox[SaleResult](0)
	if is, ok := s.(InstantScreenSink); ok {
		o.instant = is
	} else if s != nil {
		deliver(o, "display", o.screen, s.Show)
	}
	if b != nil {
		deliver(o, "beeper", o.beep, b.Beep)
	}
	if r != nil {
		deliver(o, "ecr", o.result, r.Result)
	}
	return o
}

// deliver items to fn; a failure is logged once per change between
// working and failing, and counted every time.
func deliver[T any](o *outputs, name string, mb *mailbox[T], fn func(T) error) {
	o.wg.Add(1)
	go func() {
		defer o.wg.Done()
		failing := false
		for {
			item, ok := mb.take()
			if !ok {
				return
			}
			err := fn(item)
			switch {
			case err != nil && !failing:
				o.log.Warn("output failing", zap.String("output", name), zap.Error(err))
				failing = true
			case err == nil && failing:
				o.log.Info("output working again", zap.String("output", name))
				failing = false
			}
			if err != nil && o.obs != nil {
				o.obs.OutputFailed(name)
			}
		}
	}()
}

// show hands the display a screen: at once to an instant sink, else
// through its mailbox (the newest wins).
func (o *outputs) show(s Screen) {
	if o.instant != nil {
		_ = o.instant.Show(s) // never fails
		return
	}
	o.screen.put(s)
}

// close stops the output goroutines after they drain. A sink stuck past
// its own deadlines is not waited for longer than closeWait: the lane is
// stopping and must not hang on a dead device.
func (o *outputs) close() {
	o.screen.close()
	o.beep.close()
	o.result.close()
	done := make(chan struct{})
	go func() { o.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(closeWait):
		o.log.Warn("an output did not finish before shutdown")
	}
}

const closeWait = 2 * time.Second

// mailbox is a queue between the loop and one output goroutine. With
// limit 1 it keeps only the newest item; with limit n>1 it drops new items
// past n; with limit 0 it is unbounded.
type mailbox[T any] struct {
	mu     sync.Mutex
	cond   *sync.Cond
	items  []T
	limit  int
	closed bool
}

func newMailbox[T any](limit int) *mailbox[T] {
	m := &mailbox[T]{limit: limit}
	m.cond = sync.NewCond(&m.mu)
	return m
}

// put never blocks. It reports false when the item was dropped.
func (m *mailbox[T]) put(item T) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return false
	}
	switch {
	case m.limit == 1:
		m.items = append(m.items[:0], item)
	case m.limit > 1 && len(m.items) >= m.limit:
		return false
	default:
		m.items = append(m.items, item)
	}
	m.cond.Signal()
	return true
}

// take waits for an item; it returns false once closed and drained.
func (m *mailbox[T]) take() (T, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for len(m.items) == 0 && !m.closed {
		m.cond.Wait()
	}
	var zero T
	if len(m.items) == 0 {
		return zero, false
	}
	item := m.items[0]
	m.items[0] = zero
	m.items = m.items[1:]
	return item, true
}

func (m *mailbox[T]) close() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.closed = true
	m.cond.Broadcast()
}
