package scanner

import (
	"context"
	"time"
)

// Code is one scanned code.
type Code struct {
	Text   string
	Source string    // device, for logs
	At     time.Time // when the terminating key or byte arrived
}

// Sink takes scanned codes (the terminal, through the daemon). Scan may
// block until the code is taken; the reader waits for it, as the keypad
// waits for its keypad.Sink. An error means ctx ended or the taker stopped.
type Sink interface {
	Scan(ctx context.Context, c Code) error
}

// Source reads codes until ctx ends and hands each to sink.
type Source interface {
	Run(ctx context.Context, sink Sink) error
}
