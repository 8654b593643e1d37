package ecr

import "time"

// recent remembers keys with the time (monotonic) they were last touched,
// and forgets them once older than a window. Keys are touched in time
// order, so expiry pops from the front of a queue: O(1) per touch, never a
// walk over everything remembered (a busy lane makes thousands of sales in
// a window).
//
// It also keeps at most max keys, dropping the oldest: a register (or a
// flood) making hundreds of sales a minute must not grow the lane's memory
// for ten minutes. What it forgets the journal still knows (the order's
// time, and whether the register took its result), so forgetting early
// only falls back to what a restart would use.
type recent struct {
	window time.Duration
	max    int
	at     map[string]time.Time
	queue  []stamp // queue[head:] are the stamps in touch order
	head   int
}

type stamp struct {
	key string
	at  time.Time
}

func newRecent(window time.Duration, max int) *recent {
	return &recent{window: window, max: max, at: map[string]time.Time{}}
}

// touch records key as seen now.
func (r *recent) touch(key string) {
	now := time.Now()
	r.at[key] = now
	r.queue = append(r.queue, stamp{key, now})
	r.expire(now)
	for len(r.at) > r.max && r.head < len(r.queue) {
		r.pop()
	}
	if live := len(r.queue) - r.head; r.head > live || live > 2*r.max {
		r.compact()
	}
}

// get returns when key was last touched, if within the window.
func (r *recent) get(key string) (time.Time, bool) {
	r.expire(time.Now())
	t, ok := r.at[key]
	return t, ok
}

func (r *recent) expire(now time.Time) {
	for r.head < len(r.queue) && now.Sub(r.queue[r.head].at) > r.window {
		r.pop()
	}
}

// pop forgets the oldest stamp's key unless it was touched again later
// (then a newer stamp further on stands for it).
func (r *recent) pop() {
	s := r.queue[r.head]
	r.queue[r.head] = stamp{}
	r.head++
	if t, ok := r.at[s.key]; ok && t.Equal(s.at) {
		delete(r.at, s.key)
	}
}

// compact moves the live stamps to the front and drops stale ones (a key
// asked again and again leaves one per ask): amortised O(1) per touch.
func (r *recent) compact() {
	live := r.queue[:0]
	for _, s := range r.queue[r.head:] {
		if t, ok := r.at[s.key]; ok && t.Equal(s.at) {
			live = append(live, s)
		}
	}
	clear(r.queue[len(live):])
	r.queue, r.head = live, 0
}
