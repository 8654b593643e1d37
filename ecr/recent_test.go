package ecr

import (
	"fmt"
	"testing"
	"testing/synctest"
	"time"
)

func TestRecentExpires(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newRecent(10*time.Minute, 1<<20)
		r.touch("a")
		time.Sleep(6 * time.Minute)
		r.touch("b")
		r.touch("a") // asked again: its window starts over
		time.Sleep(6 * time.Minute)
		if _, ok := r.get("a"); !ok {
			t.Fatal("a touched 6 min ago was forgotten")
		}
		if _, ok := r.get("b"); !ok {
			t.Fatal("b touched 6 min ago was forgotten")
		}
		time.Sleep(5 * time.Minute)
		if _, ok := r.get("a"); ok {
			t.Fatal("a kept past its window")
		}
		if len(r.queue)-r.head != 0 || len(r.at) != 0 {
			t.Fatalf("expired entries kept: %d queued, %d keys", len(r.queue), len(r.at))
		}
	})
}

// A busy lane remembers every sale of the window: touching one is O(1).
func BenchmarkRecentTouch(b *testing.B) {
	r := newRecent(10*time.Minute, 1<<20)
	keys := make([]string, 1<<16)
	for i := range keys {
		keys[i] = fmt.Sprint("ORDER-", i)
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		r.touch(keys[i&(len(keys)-1)])
	}
}

// At most max keys: the oldest go first, a key touched again is kept.
func TestRecentBounded(t *testing.T) {
	r := newRecent(10*time.Minute, 3)
	for _, k := range []string{"a", "b", "c", "a", "d", "e"} {
		r.touch(k)
	}
	for k, want := range map[string]bool{"a": true, "b": false, "c": false, "d": true, "e": true} {
		if _, ok := r.get(k); ok != want {
			t.Errorf("%s kept: %v, want %v", k, ok, want)
		}
	}
	for i := 0; i < 10000; i++ {
		r.touch(fmt.Sprint(i))
	}
	if len(r.at) != 3 || len(r.queue)-r.head > 3 {
		t.Fatalf("%d keys, %d queued, after a flood", len(r.at), len(r.queue))
	}
	// One key asked again and again: stale stamps do not pile up.
	for i := 0; i < 10000; i++ {
		r.touch("again")
	}
	if len(r.queue) > 2*3+1 {
		t.Fatalf("%d stamps queued for %d keys", len(r.queue), len(r.at))
	}
	if _, ok := r.get("again"); !ok {
		t.Fatal("the key asked again was forgotten")
	}
}
