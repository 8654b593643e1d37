package main

import (
	"io"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/scanpay/scanpay/config"
)

// newLogger builds the process's one logger: JSON for journald by default,
// console text for people.
func newLogger(c config.Log, w io.Writer) *zap.Logger {
	level := zapcore.InfoLevel
	_ = level.UnmarshalText([]byte(c.Level))
	enc := zap.NewProductionEncoderConfig()
	enc.EncodeTime = zapcore.ISO8601TimeEncoder
	var encoder zapcore.Encoder
	if c.Format == "console" {
		encoder = zapcore.NewConsoleEncoder(enc)
	} else {
		encoder = zapcore.NewJSONEncoder(enc)
	}
	return zap.New(zapcore.NewCore(encoder, zapcore.Lock(zapcore.AddSync(w)), level))
}
