package iotpay

import (
	"errors"
	"io"
	"strings"
	"testing"
	"testing/iotest"
)

// A reply is read whole whatever length the gateway announced (a wrong
// Content-Length must not cut it or pad it), and never past the limit.
func TestReadReplyIgnoresAWrongAnnouncedLength(t *testing.T) {
	body := strings.Repeat("x", 700)
	for _, announced := range []int64{-1, 0, 1, 699, 700, 701, 4096, MaxReplyBytes, MaxReplyBytes + 1, 1 << 40} {
		got, err := readReply(strings.NewReader(body), announced)
		if err != nil || string(got) != body {
			t.Fatalf("announced %d: read %d bytes, %v", announced, len(got), err)
		}
	}
	long := strings.Repeat("y", MaxReplyBytes+10)
	got, err := readReply(strings.NewReader(long), 10)
	if err != nil || len(got) != MaxReplyBytes+1 {
		t.Fatalf("an overlong reply read %d bytes (%v), want the limit and one more", len(got), err)
	}
	cut := errors.New("connection reset")
	got, err = readReply(io.MultiReader(strings.NewReader("abc"), iotest.ErrReader(cut)), 700)
	if !errors.Is(err, cut) || string(got) != "abc" {
		t.Fatalf("a reply cut off: %q %v", got, err)
	}
}
