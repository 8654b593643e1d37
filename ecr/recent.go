package ecr

import "time"

// recent remembers keys with the time (monotonic) they were last touched,
// and forgets them once older than a window. Keys are touched in time
// order, so expiry pops from the front of a queue: O(1) per touch, never a
// walk over everything remembered (a busy lane makes thousands of sales in
// a window).
type recent struct {
	window time.Duration
	at     map[string]time.Time
	queue  []stamp
}

type stamp struct {
	key string
	at  time.Time
}

func newRecent(window time.Duration) *recent {
	return &recent{window: window, at: map[string]time.Time{}}
}

// touch records key as seen now.
func (r *recent) touch(key string) {
	now := time.Now()
	r.at[key] = now
	r.queue = append(r.queue, stamp{key, now})
	r.expire(now)
}

// get returns when key was last touched, if within the window.
func (r *recent) get(key string) (time.Time, bool) {
	r.expire(time.Now())
	t, ok := r.at[key]
	return t, ok
}

func (r *recent) expire(now time.Time) {
	n := 0
	for n < len(r.queue) && now.Sub(r.queue[n].at) > r.window {
		s := r.queue[n]
		// A key touched again later has a newer stamp further on.
		if t, ok := r.at[s.key]; ok && t.Equal(s.at) {
			delete(r.at, s.key)
		}
		n++
	}
	if n > 0 {
		r.queue = append(r.queue[:0], r.queue[n:]...)
	}
}
