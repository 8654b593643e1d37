package ecr

import (
	"fmt"
	"testing"
	"testing/synctest"
	"time"
)

func TestRecentExpires(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newRecent(10 * time.Minute)
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
		if len(r.queue) != 0 || len(r.at) != 0 {
			t.Fatalf("expired entries kept: %d queued, %d keys", len(r.queue), len(r.at))
		}
	})
}

// A busy lane remembers every sale of the window: touching one is O(1).
func BenchmarkRecentTouch(b *testing.B) {
	r := newRecent(10 * time.Minute)
	keys := make([]string, 1<<16)
	for i := range keys {
		keys[i] = fmt.Sprint("ORDER-", i)
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		r.touch(keys[i&(len(keys)-1)])
	}
}
